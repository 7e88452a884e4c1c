"""The package version, in a module of its own so that modules inside the package
(the CLI, training's provenance, batch outputs, session files) read it without importing
the package ``__init__``, which imports them: no import runs back up the tree.
``pyproject.toml`` reads it from here too."""

__version__ = "0.1.0"
