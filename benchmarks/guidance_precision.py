"""How often the "Where to correct" ranking points at a real error, on many images.

The human-in-the-loop benchmark (``hitl.py --user guided``) measures the ranking on the one
image its user corrects; once a round has fixed most of it, a few errors are left and the
precision of a top 10 says more about the image than about the ranking. This script scores
the ranking of a model's own labels on other images of the same kind, none of which the
hitl benchmark tunes on or scores: per image, the share of the top N candidates that show
an error (by the truth, exactly as ``hitl.errors_seen`` judges the guided user's look), the
share of its objects that are wrong (what N objects picked at random show, on average), and
the best a ranking could do (every wrong object first). One JSON line per image, then a
summary line.

    .venv/bin/python benchmarks/guidance_precision.py --case fluo
    B=.venv/bin/python; M=m/histo-guided-round1.safetensors
    $B benchmarks/hitl.py --case histo --user guided --rounds 1 --save-models m
    $B benchmarks/guidance_precision.py --case histo --model $M

Images, held out from both the hitl cases and the choice of the ranking's weights (made on
histology training images 1-8 of the order below, ISBI slices 1-4 and fluorescence training
images 0-11): ``histo`` the 24 dsb2018_histo_brightfield training images 13-36 in the order
``hitl.py --case histo`` draws its image from (seed 0: image 0); ``em`` ISBI 2012 slices 10-19
(hitl tunes on slice 0 and scores slices 20-29); ``fluo`` dsb2018_fluo training images
12-35; ``sample`` the bundled nuclei sample (the user guide's screenshot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hitl import DATA, _em_instances, errors, errors_seen, object_candidates, predict

import napari_unet
from napari_unet.data import find_pairs, read_pair
from napari_unet.guidance import guide
from napari_unet.sample_data import load_sample


def images(case: str, data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, true instances) pairs of a case (see the module docstring)."""
    if case == "histo":
        train = find_pairs(data / "dsb2018_histo_brightfield" / "train")
        order = np.random.default_rng(0).permutation(len(train))  # hitl's seed-0 pick first
        return [read_pair(*train[k], 1) for k in order[13:37]]
    if case == "em":
        pairs = find_pairs(data / "isbi2012_em_membrane" / "train")[10:20]
        return [(image, _em_instances(mask)) for image, mask in
                (read_pair(i, m, 1) for i, m in pairs)]
    if case == "sample":
        image = np.asarray(load_sample("nuclei_fluo").data)[None]
        return [(image, np.asarray(load_sample("nuclei_fluo_labels").data))]
    pairs = find_pairs(data / "dsb2018_fluo" / "train")[12:36]
    return [read_pair(i, m, 1) for i, m in pairs]


def score(image: np.ndarray, truth: np.ndarray, model, top: int) -> dict:
    """Top-N precision of the ranking, of a random pick, and of a perfect ranking."""
    (labels,), (probs,) = predict([image], model)
    labels = labels.astype(np.int64)
    known = errors(labels, truth)
    ranking = guide(labels, probs, model.config.task, model.config.postprocess).candidates
    shown = [bool(errors_seen(c, labels, truth, known)) for c in ranking[:top]]
    objects = object_candidates(labels, np.zeros(labels.shape, bool))
    wrong = sum(bool(errors_seen(c, labels, truth, known)) for c in objects)
    n = min(top, len(objects))
    return {"objects": len(objects), "errors": len(known), "wrong_objects": wrong,
            "ranked": len(ranking), "top": len(shown),
            "precision": round(float(np.mean(shown)), 3) if shown else None,
            "random": round(wrong / len(objects), 3) if objects else None,
            "best": round(min(wrong, n) / n, 3) if n else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("histo", "em", "fluo", "sample"), required=True)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    model = napari_unet.load_model(args.model)
    rows = []
    for k, (image, truth) in enumerate(images(args.case, args.data)):
        rows.append(score(image, truth, model, args.top))
        print(json.dumps({"image": k, **rows[-1]}), flush=True)
    mean = {key: round(float(np.mean([r[key] for r in rows if r[key] is not None])), 3)
            for key in ("precision", "random", "best")}
    print(json.dumps({"case": args.case, "model": args.model, "top": args.top,
                      "images": len(rows), "mean": mean}))


if __name__ == "__main__":
    main()
