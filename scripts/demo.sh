#!/usr/bin/env bash
# Segment the bundled fluorescence-nuclei sample with the bundled "nuclei" model and
# write the labels plus an overlay picture to out/demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
.venv/bin/napari-unet segment src/napari_unet/samples/nuclei_fluo.tif --overwrite \
    --model nuclei --out out/demo --overlay
echo
echo "demo: outputs are in $(pwd)/out/demo:"
ls -l out/demo
