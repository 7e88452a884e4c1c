#!/usr/bin/env bash
# Reproduces the three models shipped in src/napari_unet/models/ (CPU, 2 cores, ~2 h).
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
# nuclei-he starts from nuclei; stained RGB images reach it as their optical density (--rgb
# auto). This script starts afresh; to continue a stopped run, run its line alone with
# --resume added (docs/cli.md, "train").
rm -f runs/nuclei-he.ckpt
.venv/bin/napari-unet train "$DATA/dsb2018_histo_brightfield/train" --out runs/nuclei-he.safetensors \
  --name nuclei-he --base-model runs/nuclei.safetensors --lr 1e-3 --steps 1500 --time-budget 50 \
  --val-every 100 --patience 0 --half --overwrite --checkpoint runs/nuclei-he.ckpt
cp runs/nuclei.safetensors runs/membrane.safetensors runs/nuclei-he.safetensors src/napari_unet/models/
