"""The package version, in a module of its own so that modules inside the package
(the CLI, training's provenance, batch outputs, session files) read it without importing
the package ``__init__``, which imports them: no import runs back up the tree.

The version comes from git tags: setuptools-scm writes ``_build_version.py`` when the
package is built or installed (editable installs too; see ``[tool.setuptools_scm]`` in
pyproject.toml). A source tree used without installing it (``PYTHONPATH=src``) has no such
file and says ``0.0.0+unknown`` rather than a number it cannot know."""

try:
    from ._build_version import __version__
except ImportError:  # never built or installed: no version to tell
    __version__ = "0.0.0+unknown"
