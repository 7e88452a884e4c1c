"""Do the shipped models score the same with the fast path as in exact fp32? (issue 4)

    .venv/bin/python benchmarks/accuracy_fast.py --json runs/accuracy_fast.json

Scores each shipped model on its held-out data twice in one run, ``fast=False`` (fp32,
BatchNorm as trained) and ``fast=True`` (the default: BatchNorm folded, bf16 weights,
channels_last), and prints both with the difference: ``nuclei`` on the 58 DSB 2018
fluorescence test images (accuracy and F1 at IoU 0.5), ``membrane`` on ISBI 2012 slices
25-29 (pixel error, adapted Rand error), as in docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import napari_unet

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def held_out_membrane(folder: Path) -> Path:
    """ISBI slices 25-29 as an images/ + masks/ folder of symlinks."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for i in range(25, 30):
            (folder / sub / f"{i}.png").symlink_to(DATA / "isbi2012_em_membrane" / "train" / sub / f"{i}.png")
    return folder


def nuclei_scores(fast: bool) -> dict:
    result = napari_unet.evaluate(napari_unet.load_model("nuclei"), DATA / "dsb2018_fluo" / "test",
                                  device="cpu", fast=fast)
    row = next(r for r in result.summary["per_threshold"] if abs(r["threshold"] - 0.5) < 1e-9)
    return {"accuracy@0.5": row["accuracy"], "f1@0.5": row["f1"],
            "n_pred": result.summary["n_pred"]}


def membrane_scores(fast: bool, folder: Path) -> dict:
    result = napari_unet.evaluate(napari_unet.load_model("membrane"), folder, device="cpu",
                                  invert_masks=True, fast=fast)
    return {k: v for k, v in result.summary.items() if isinstance(v, (int, float))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        membrane = held_out_membrane(Path(tmp) / "held_out")
        for fast in (False, True):
            key = "fast" if fast else "fp32"
            out[key] = {"nuclei": nuclei_scores(fast), "membrane": membrane_scores(fast, membrane)}
            print(key, json.dumps(out[key]), flush=True)
    print("| model | score | fp32 | fast | fast - fp32 |")
    print("|---|---|---|---|---|")
    for model in ("nuclei", "membrane"):
        for score, exact in out["fp32"][model].items():
            fast = out["fast"][model][score]
            print(f"| {model} | {score} | {exact:.4f} | {fast:.4f} | {fast - exact:+.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
