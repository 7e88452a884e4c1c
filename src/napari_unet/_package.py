"""Who we are on the package index, and the unrelated package that shares our import name.

This project's distribution is ``napari-interactive-unet`` (the npe2 plugin has the same
name; the import package stays ``napari_unet`` and the command ``napari-unet``). The
distribution ``napari-unet`` on PyPI is a different, unrelated plugin that also installs an
import package ``napari_unet``: with both in one environment, whichever was installed last
overwrites the other's files, silently. :func:`warn_if_clashing` says so at import.
"""

from __future__ import annotations

import importlib.metadata
import sys
import warnings
from collections.abc import Sequence
from typing import Optional

from .errors import PackageClashWarning

#: Our distribution name on the package index (checked free on PyPI, docs/user-guide.md).
DISTRIBUTION = "napari-interactive-unet"
#: The npe2 plugin name (``napari.yaml``), as napari's menus, ``viewer.open(plugin=...)``
#: and ``open_sample`` take it.
PLUGIN = DISTRIBUTION
#: The plugin name before the rename: sessions saved then name their samples with it.
OLD_PLUGIN = "napari-unet"
#: The unrelated distribution that installs the same import package ``napari_unet``.
CLASHING_DISTRIBUTION = "napari-unet"


def clash_message(path: Optional[Sequence[str]] = None) -> Optional[str]:
    """What is wrong when the distribution ``napari-unet`` is installed (None when it is
    not). ``path``: where to look (default ``sys.path``). A name lookup only (well under a
    millisecond): scanning every distribution's files would add half a second to each
    import."""
    where = list(sys.path if path is None else path)
    found = next(iter(importlib.metadata.distributions(name=CLASHING_DISTRIBUTION, path=where)),
                 None)
    if found is None:
        return None
    return (
        f"the package '{CLASHING_DISTRIBUTION}' {found.version} is installed in this "
        f"environment: it is a different plugin (or an old install of this one) that uses "
        f"the same import name napari_unet, so the two overwrite each other's files. Fix: "
        f"pip uninstall {CLASHING_DISTRIBUTION}, then pip install --force-reinstall "
        f"{DISTRIBUTION}"
    )


def warn_if_clashing(path: Optional[Sequence[str]] = None) -> Optional[str]:
    """Warn (:class:`~napari_unet.errors.PackageClashWarning`) when :func:`clash_message`
    finds the clashing distribution; returns the message, or None."""
    message = clash_message(path)
    if message is not None:
        warnings.warn(message, PackageClashWarning, stacklevel=3)
    return message
