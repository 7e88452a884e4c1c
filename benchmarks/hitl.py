"""Human-in-the-loop benchmark: correct a few images of an unseen domain, fine-tune, re-score.

Simulates a user on dsb2018_histo_brightfield (never seen by the shipped ``nuclei`` model):
on N training images the user corrects every pixel of every object the model got wrong
(unmatched at IoU 0.5, on either side) and every foreground/background error; untouched
pixels keep the model's prediction and do not count as ground truth. Then ``fine_tune``
runs with a time budget, and accuracy at IoU 0.5 is measured on the test split.

    .venv/bin/python benchmarks/hitl.py --images 1 2 4 --budgets 30 60 120

Results go to stdout as a Markdown table (and to --json). Uses the same ``fine_tune`` as
the widget and the CLI.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import napari_unet
from napari_unet.data import find_pairs, to_channels
from napari_unet.finetune import FINE_TUNE_CONFIG
from napari_unet.metrics import iou_pairs
from napari_unet.tiff_io import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018_histo_brightfield"


def load_gray(path: Path) -> np.ndarray:
    image = read_image(path)
    return to_channels(np.asarray(image.data), image.axes, 1)[0]


def simulate_corrections(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(corrected labels, edit mask) as a diligent user would leave them."""
    true_ids, pred_ids, i, j, iou = iou_pairs(truth, pred)
    good = iou >= 0.5
    matched_true = set(true_ids[i[good]].tolist())
    matched_pred = set(pred_ids[j[good]].tolist())
    wrong_true = np.isin(truth, [t for t in true_ids.tolist() if t not in matched_true and t > 0])
    wrong_pred = np.isin(pred, [p for p in pred_ids.tolist() if p not in matched_pred and p > 0])
    mask = wrong_true | wrong_pred | ((truth > 0) != (pred > 0))
    corrected = np.where(mask, truth.astype(np.int64) + int(pred.max()), pred).astype(np.int64)
    corrected[mask & (truth == 0)] = 0
    return corrected, mask


def accuracy_at_05(model, test_dir: Path) -> float:
    summary = napari_unet.evaluate(model, test_dir).summary
    return float(summary["per_threshold"][0]["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 120])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--lr", type=float, default=FINE_TUNE_CONFIG.lr)
    parser.add_argument("--batch-size", type=int, default=FINE_TUNE_CONFIG.batch_size)
    parser.add_argument("--patch-size", type=int, default=FINE_TUNE_CONFIG.patch_size)
    args = parser.parse_args()
    config = replace(FINE_TUNE_CONFIG, lr=args.lr, batch_size=args.batch_size,
                     patch_size=args.patch_size)

    base = napari_unet.load_model(args.model)
    test_dir = args.data / "test"
    before = accuracy_at_05(base, test_dir)
    pairs = find_pairs(args.data / "train")
    order = np.random.default_rng(args.seed).permutation(len(pairs))
    rows = []
    for n in args.images:
        chosen = [pairs[k] for k in order[:n]]
        images, labels, masks = [], [], []
        for image_path, mask_path in chosen:
            gray = load_gray(image_path)
            truth = np.asarray(read_image(mask_path).data)
            pred = napari_unet.segment(gray, base, axes="YX")
            corrected, mask = simulate_corrections(pred, truth)
            images.append(gray)
            labels.append(corrected)
            masks.append(mask)
        for budget in args.budgets:
            start = time.perf_counter()
            tuned = napari_unet.fine_tune(base, images, labels, masks, axes="YX", time_budget=budget,
                                          config=config)
            seconds = time.perf_counter() - start
            after = accuracy_at_05(tuned, test_dir)
            round_info = tuned.config.provenance["fine_tune_rounds"][-1]
            rows.append({
                "images": n, "budget_s": budget, "seconds": round(seconds, 1),
                "steps": round_info["steps"],
                "corrected_pixels": int(sum(m.sum() for m in masks)),
                "acc_before": round(before, 3), "acc_after": round(after, 3),
                "gain": round(after - before, 3),
                "names": [p[0].stem[:12] for p in chosen],
                "lr": config.lr, "batch_size": config.batch_size, "patch_size": config.patch_size,
            })
            print(json.dumps(rows[-1]), flush=True)
    print("\n| corrected images | budget (s) | steps | corrected px | acc@0.5 before | after | gain |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['budget_s']:.0f} | {r['steps']} | {r['corrected_pixels']} | "
              f"{r['acc_before']:.3f} | {r['acc_after']:.3f} | {r['gain']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
