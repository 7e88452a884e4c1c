"""Object size on EM cells: the shipped ``nuclei`` model segments the cells of the ISBI 2012
EM slices as instances (connected components of the non-membrane mask), at its own scale and
with ``object_size`` (Cellpose's "diameter"), which resizes the image so the cells reach the
network at the size it learnt (20.3 px).

The object size is chosen on slices 0-24 (the grid below) and scored on slices 25-29, the
held-out block of docs/models.md. Run from the repository root:

    .venv/bin/python benchmarks/object_size.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage.measure import label

from napari_unet import load_model, segment
from napari_unet.scores import score_image, summarise

GRID = (None, 30.0, 40.0, 50.0, 60.0, 80.0)


def cells(mask: np.ndarray) -> np.ndarray:
    """The cells enclosed by membranes (mask 0) as instances, 4-connected."""
    return label(mask > 0, connectivity=1)


def accuracy(model, slices: list[Path], size: float | None) -> float:
    scores = []
    for path in slices:
        image = np.asarray(iio.imread(path))
        truth = cells(np.asarray(iio.imread(path.parent.parent / "masks" / path.name)))
        scores.append(score_image(path.stem, truth, segment(image, model, "YX", object_size=size)))
    return summarise(scores)["per_threshold"][0]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    folder = args.data / "isbi2012_em_membrane" / "train" / "images"
    slices = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))
    choose, held_out = slices[:25], slices[25:]
    model = load_model("nuclei")
    start = time.perf_counter()
    chosen = {size: accuracy(model, choose, size) for size in GRID}
    for size, acc in chosen.items():
        print(f"slices 0-24  object size {size or 'model'}: accuracy@0.5 {acc:.3f}")
    best = max(chosen, key=lambda s: chosen[s])
    for size in dict.fromkeys((None, best)):
        print(f"slices 25-29 object size {size or 'model'}: accuracy@0.5 "
              f"{accuracy(model, held_out, size):.3f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
