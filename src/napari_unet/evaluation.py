"""``evaluate``: score a model on a folder of annotated images, per image and overall."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy import ndimage as ndi

from .axes import make_layout
from .data import find_pairs, read_pair
from .io import atomic_write, read_image, read_mask
from .metrics import adapted_rand_error, cells_from_membrane, pixel_error
from .model import Model
from .options import SegmentOptions
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .scores import ImageScores, score_image, scores_table, summarise
from .segment import segment
from .volume import file_voxel_size


@dataclass
class Evaluation:
    """Per-image rows and the overall summary of one evaluation run."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    scores: list[ImageScores] = field(default_factory=list)

    def overall_row(self) -> dict[str, Any]:
        """The summary in the per-image columns: scores from counts summed over images."""
        row: dict[str, Any] = {"image": "overall"}
        for key, value in self.summary.items():
            if key == "per_threshold":
                for t in value:
                    row[f"acc@{t['threshold']:g}"] = t["accuracy"]
                    row[f"f1@{t['threshold']:g}"] = t["f1"]
            elif key == "mean_foreground_iou":
                row["fg_iou"] = value
            elif not isinstance(value, (dict, list)):
                row[key] = value
        return row

    def write_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Per-image rows plus an ``overall`` row, written atomically."""
        rows = self.rows + [self.overall_row()]
        columns = list(dict.fromkeys(k for row in rows for k in row))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

        return atomic_write(path, write, overwrite=overwrite)


def evaluate(model: Model, data_dir: str | Path, options: SegmentOptions | None = None, *,
             limit: int | None = None, invert_masks: bool = False,
             progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None, **choices: Any) -> Evaluation:
    """Segment every image of ``data_dir`` with ``options`` (``choices``: their fields as
    keywords, as for :func:`~napari_unet.segment.segment`) and compare with its mask.

    Instance models: accuracy TP/(TP+FP+FN), F1 at IoU 0.5..0.9 (one-to-one matching) and
    foreground IoU. Semantic (membrane) models: pixel error and adapted Rand error of the
    cells enclosed by membranes; ``invert_masks`` reads mask value 0 as the class (ISBI).

    Z stacks are segmented whole, with objects built in 3D (``stitch_3d``) and scored in
    3D, with ``options.voxel_size`` (Z, Y, X) or else the file's calibration; a binary stack mask
    (one value besides 0, as QCANet's) counts its 3D connected components as the objects.
    """
    options = SegmentOptions.of(options, **choices)
    pairs = find_pairs(data_dir)[:limit]
    rows, scores = [], []
    for i, (image_path, mask_path) in enumerate(pairs):
        check_cancel(cancel)
        image = read_image(image_path)
        layout = make_layout(image.data, image.axes, model.in_channels)
        if "Z" in layout.stack_axes:
            mask = _stack_objects(read_mask(mask_path))
            stack_options = SegmentOptions.of(options, stitch_3d=True)
            pred = segment(image.data, model, layout.axes,
                           file_voxel_size(stack_options, image, layout), cancel=cancel)
        else:
            plane, mask = read_pair(image_path, mask_path, model.in_channels, options.rgb)
            pred = segment(plane, model, "CYX", options, cancel=cancel)
        if model.config.task == "instance":
            s = score_image(image_path.stem, mask, pred)
            scores.append(s)
        else:
            truth = (mask == 0) if invert_masks else (mask > 0)
            rows.append({
                "image": image_path.stem,
                "pixel_error": pixel_error(truth, pred == 1),
                "adapted_rand_error": adapted_rand_error(cells_from_membrane(truth),
                                                         cells_from_membrane(pred == 1)),
            })
        report(progress, i + 1, len(pairs))
    if model.config.task == "instance":
        return Evaluation(scores_table(scores), summarise(scores), scores)
    summary = {key: float(np.mean([r[key] for r in rows])) for key in ("pixel_error", "adapted_rand_error")}
    summary["n_images"] = len(rows)
    return Evaluation(rows, summary)


def _stack_objects(mask: np.ndarray) -> np.ndarray:
    """The objects of a stack's mask: its ids, or the 3D connected components (faces
    touching) of a binary mask."""
    values = np.unique(mask)
    return ndi.label(mask > 0)[0] if values[values > 0].size == 1 else mask
