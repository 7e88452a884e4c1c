"""The distribution's name of its own: the unrelated ``napari-unet`` on PyPI shares our import
name ``napari_unet``, and importing warns when it is installed alongside."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from napari_unet._package import CLASHING_DISTRIBUTION, DISTRIBUTION, PLUGIN, warn_if_clashing
from napari_unet.errors import PackageClashWarning

ROOT = Path(__file__).resolve().parents[1]


def _installed(folder: Path, name: str, version: str) -> Path:
    """A minimal installed distribution ``name`` in ``folder`` (what pip leaves)."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_the_unrelated_napari_unet_installed_alongside_warns(tmp_path: Path) -> None:
    site = _installed(tmp_path, CLASHING_DISTRIBUTION, "1.0.0")
    with pytest.warns(PackageClashWarning, match=r"'napari-unet' 1\.0\.0 is installed") as seen:
        warn_if_clashing([str(site)])
    assert f"pip uninstall {CLASHING_DISTRIBUTION}" in str(seen[0].message)


def test_our_own_distribution_alone_does_not_warn(tmp_path: Path) -> None:
    site = _installed(tmp_path, DISTRIBUTION, "0.1.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_clashing([str(site)]) is None


def test_names_agree_across_pyproject_and_manifest() -> None:
    """One name for the distribution, its napari.manifest entry point and the npe2 plugin;
    the import package and the command keep the napari_unet / napari-unet names."""
    import tomllib  # Python 3.11+; the CI runs 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == PLUGIN != CLASHING_DISTRIBUTION
    assert project["entry-points"]["napari.manifest"] == {PLUGIN: "napari_unet:napari.yaml"}
    assert project["scripts"] == {"napari-unet": "napari_unet.cli:main"}
    manifest = (ROOT / "src" / "napari_unet" / "napari.yaml").read_text()
    assert manifest.startswith(f"name: {PLUGIN}\n")
