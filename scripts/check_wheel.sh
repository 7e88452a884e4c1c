#!/usr/bin/env bash
# Packaging check (CI; scripts/test.sh runs it before a full test run): build the wheel,
# install it into a fresh virtual environment with only `pip install -c constraints.txt
# <wheel>[pyqt6]`, and check that napari's plugin engine (npe2) finds the plugin, that the
# version came from git (setuptools-scm), and that importing warns of no clash with the
# unrelated `napari-unet` distribution. Builds offline from .venv (--no-isolation: build
# and setuptools-scm come with the [testing] extra). constraints.txt pins the CPU torch, so
# pip never fetches another torch. Cost: docs/cli.md ("Packaging check").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/napari-unet-wheel.XXXXXX")
# The venv is ~1.5 GB (torch): removing it takes minutes on a busy disk, so it goes in the
# background once the check is over.
trap '(rm -rf "$work" &)' EXIT

.venv/bin/python -m build --wheel --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; echo "check_wheel.sh: the wheel did not build" >&2; exit 1; }
rm -rf build  # setuptools' staging folder, not needed once the wheel exists
wheel=$(ls "$work"/dist/*.whl)
.venv/bin/python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -c constraints.txt "$wheel[pyqt6]"

cd "$work"  # away from the checkout, so the installed package is the one imported
"$work/venv/bin/python" - "$wheel" <<'PY'
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import napari_unet
    from napari_unet._package import DISTRIBUTION, PLUGIN
clashes = [w for w in caught if "napari_unet" in str(w.message)]
assert not clashes, f"import warned: {clashes[0].message}"
assert "site-packages" in napari_unet.__file__, napari_unet.__file__
wheel_version = Path(sys.argv[1]).name.split("-")[1]
assert napari_unet.__version__ == wheel_version != "0.0.0+unknown", napari_unet.__version__

from npe2 import PluginManager

pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest(PLUGIN)
assert manifest.package_metadata.name == DISTRIBUTION, manifest.package_metadata
assert [r.command for r in manifest.contributions.readers] == [f"{PLUGIN}.get_reader"]
assert len(manifest.contributions.widgets) == 3 and len(manifest.contributions.sample_data) == 3
# File > Save Selected Layers defaults to the first writer napari lists (docs/user-guide.md).
writers = [w.command for w in pm.iter_compatible_writers(["labels"])]
assert f"{PLUGIN}.write_labels" in writers, writers
print(f"check_wheel.sh: writers offered for one labels layer, the default first: {writers}")
print(f"check_wheel.sh: {Path(sys.argv[1]).name} installs; npe2 finds plugin {PLUGIN} "
      f"{napari_unet.__version__} with its reader, writer, 3 widgets and 3 samples")
PY
"$work/venv/bin/napari-unet" --version
