#!/usr/bin/env bash
# Reproduces the two models shipped in src/napari_unet/models/ (CPU, 2 cores, ~65 min).
# Results and scores are recorded in docs/models.md. CI never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${NAPARI_UNET_DATA:-../shared/data}
mkdir -p runs
.venv/bin/napari-unet train "$DATA/dsb2018_fluo/train" --out runs/nuclei.safetensors --name nuclei \
  --steps 100000 --time-budget 50 --val-every 250 --patience 0 --half --overwrite
.venv/bin/napari-unet train "$DATA/isbi2012_em_membrane/train" --out runs/membrane.safetensors \
  --name membrane --task semantic --class-names membrane --invert-masks --val-last 5 \
  --steps 100000 --time-budget 12 --val-every 100 --patience 0 --half --overwrite
cp runs/nuclei.safetensors runs/membrane.safetensors src/napari_unet/models/
