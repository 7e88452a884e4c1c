"""Segment and fine-tune speed on one device (CPU, CUDA or MPS): the loop's two waits.

    .venv/bin/python benchmarks/device_speed.py --device cpu --runs 3 --json runs/speed_cpu.json
    python3 benchmarks/device_speed.py --device cuda --runs 5 --json speed_cuda.json

Measures, in one process so the figures compare:
1. ``segment`` of a 2048 x 2048 plane tiled from the bundled DSB fluorescence images
   (end to end: normalisation, tiled network, post-processing), median of ``--runs``;
2. one fine-tuning round as the Fine-tune button runs it (``FINE_TUNE_CONFIG``: 100 steps
   of 4 x 256 x 256) from three corrected nuclei of a bundled image, without the time
   budget, so every device does the same steps; median of ``--runs`` rounds.

Only the bundled ``tests/data`` images are read, so it runs on a machine with nothing beside
the checkout. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from throughput import big_plane, median_time

import napari_unet
from napari_unet.device import describe, pick_device
from napari_unet.finetune import FINE_TUNE_CONFIG
from napari_unet.io import read_image, read_labels

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "dsb2018_fluo"


def few_corrections(model, n: int = 3) -> napari_unet.Correction:
    """A bundled image whose labels are the model's, with ``n`` true nuclei painted over
    them: what a user who fixes a few objects hands to Fine-tune."""
    image_path = sorted(DATA.glob("test/images/*.png"))[0]
    image = np.asarray(read_image(image_path).data)[..., 0]
    truth = np.asarray(read_labels(DATA / "test" / "masks" / f"{image_path.stem}.tif"))
    labels = napari_unet.segment(image, model, axes="YX").astype(np.int32)
    mask = np.zeros(labels.shape, bool)
    for obj in np.unique(truth[truth > 0])[:n]:
        where = truth == obj
        labels[where] = labels.max() + 1
        mask |= where
    return napari_unet.Correction(image=image, labels=labels, mask=mask, axes="YX")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = pick_device(args.device)
    out: dict = {"device": describe(device), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "model": args.model}
    print(json.dumps(out), flush=True)
    model = napari_unet.load_model(args.model)
    options = napari_unet.SegmentOptions(device=args.device)
    plane = big_plane(args.side, sorted(DATA.glob("*/images/*.png")))
    t = median_time(lambda: napari_unet.segment(plane, model, axes="YX", options=options), args.runs)
    out["segment"] = {"side": args.side, "seconds": round(t, 3), "MP/s": round(plane.size / t / 1e6, 2)}
    print(json.dumps(out["segment"]), flush=True)
    correction = few_corrections(model)
    config = replace(FINE_TUNE_CONFIG, device=args.device, time_budget=None)
    t = median_time(lambda: napari_unet.fine_tune(model, correction, config=config), args.runs)
    out["fine_tune"] = {"steps": config.steps, "batch": config.batch_size,
                        "seconds": round(t, 2), "steps/s": round(config.steps / t, 2)}
    print(json.dumps(out["fine_tune"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
