"""Human-in-the-loop benchmark: a simulated user who makes few corrections, round after round.

Each round the user looks at the labels shown (the active model's prediction with every
earlier correction pasted on top, as the Fine-tune widget shows them), fixes some errors
and touches nothing else. A fix is:

- a true object missed or badly drawn (no predicted object at IoU >= 0.5): the predicted
  pixels that cover it (and no other true object) are erased and the object is painted;
- a false object (no true object at IoU >= 0.5): it is erased.

Which errors, by ``--user``:

- ``largest`` (default): the N largest errors, known from the truth;
- ``guided``: the top N candidates of the "Where to correct" ranking
  (:func:`napari_unet.guidance.guide`, from the probabilities of the pass that made the
  labels, the previous version's labels and the corrections so far); the user looks at
  each and fixes the errors it shows (by the truth), and nothing where it was right;
- ``random``: N objects picked at random among those not corrected yet, looked at in the
  same way.

An object looked at shows an error when it is a false object, or when it covers at least
a fifth of a missed or badly drawn true object (or a fifth of it is one: a merged pair
shows both); a region with no object, when at least a fifth of a missed true object lies
in its box outside the objects. The share of the N looked at that showed an error is the
round's "precision"; "errors left" counts the errors in the labels shown at the start of the
round (missed or badly drawn true objects, false objects), what a perfect ranking could find.

Corrections accumulate over rounds. Then one Fine-tune round with the defaults (the same
``fine_tune`` and round check as the widget) trains the base model on all corrections so
far; a round the check refuses does not become active, as in the widget. Accuracy at IoU 0.5 is scored on held-out images after
every round (the candidate's score is reported too, so the check itself is judged).
``--review`` instead simulates a fully reviewed image: every error fixed and the whole
image marked as reviewed.

    .venv/bin/python benchmarks/hitl.py --case fluo --fixes 3 --rounds 3
    .venv/bin/python benchmarks/hitl.py --case histo --fixes 10 --rounds 5
    .venv/bin/python benchmarks/hitl.py --case histo --review --rounds 1
    .venv/bin/python benchmarks/hitl.py --case em --fixes 10 --rounds 5
    .venv/bin/python benchmarks/hitl.py --case histo --fixes 10 --rounds 3 --user guided

Cases (data in ../shared/data): ``fluo`` tunes on the bundled sample (a dsb2018_fluo test
image) and scores the other 57 test images; ``histo`` tunes on one dsb2018_histo_brightfield
training image and scores its 13 test images; ``em`` tunes on ISBI 2012 slice 0 with cells
as instances (connected components of the non-membrane mask) and scores slices 20-29.
One JSON line per round goes to stdout, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import napari_unet
from napari_unet.corrections import Correction, TargetOptions, paste_corrections
from napari_unet.data import find_pairs, read_pair
from napari_unet.finetune import FINE_TUNE_CONFIG, FineTuneOptions
from napari_unet.guidance import Candidate, ProbabilityStore, guide
from napari_unet.metrics import iou_pairs, match_instances
from napari_unet.round_check import check_round
from napari_unet.sample_data import load_sample

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_STEM = "07fb37aafa6626608af90c1e18f6a743f29b6b233d2e427dcd1102df6a916cf5"


@dataclass
class Case:
    tune: list[tuple[np.ndarray, np.ndarray]]  # (C, Y, X) image, true labels
    test: list[tuple[np.ndarray, np.ndarray]]


def _em_instances(mask: np.ndarray) -> np.ndarray:
    cells, _ = ndi.label(mask > 0)
    return cells


def load_case(name: str, data: Path, seed: int) -> Case:
    if name == "fluo":
        image = np.asarray(load_sample("nuclei_fluo").data)[None]
        truth = np.asarray(load_sample("nuclei_fluo_labels").data)
        pairs = [p for p in find_pairs(data / "dsb2018_fluo" / "test") if p[0].stem != SAMPLE_STEM]
        return Case([(image, truth)], [read_pair(i, m, 1) for i, m in pairs])
    if name == "histo":
        root = data / "dsb2018_histo_brightfield"
        train = find_pairs(root / "train")
        pick = train[int(np.random.default_rng(seed).permutation(len(train))[0])]
        return Case([read_pair(*pick, 1)], [read_pair(i, m, 1) for i, m in find_pairs(root / "test")])
    if name == "em":
        pairs = find_pairs(data / "isbi2012_em_membrane" / "train")
        load = [read_pair(i, m, 1) for i, m in pairs]
        cells = [(img, _em_instances(mask)) for img, mask in load]
        return Case([cells[0]], cells[20:30])
    raise SystemExit(f"unknown case {name!r}")


def accuracy(model, test: list[tuple[np.ndarray, np.ndarray]]) -> float:
    tp = fp = fn = 0
    for image, truth in test:
        pred = napari_unet.segment(image, model, axes="CYX")
        (m,) = match_instances(truth, pred, thresholds=(0.5,))
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return tp / max(tp + fp + fn, 1)


def errors(shown: np.ndarray, truth: np.ndarray) -> list[tuple[int, str, int]]:
    """(size, kind, id) of every error, largest first: 'missed' true ids (missed or badly
    drawn, e.g. merged with a neighbour), 'false' shown ids (mostly on true background; an
    unmatched object lying on true objects is fixed by redrawing those)."""
    t_ids, p_ids, i, j, iou = iou_pairs(truth, shown)
    good = iou >= 0.5
    matched_t = set(t_ids[i[good]].tolist())
    matched_p = set(p_ids[j[good]].tolist())
    t_area = np.bincount(truth.ravel().astype(np.int64))
    shown_flat = shown.ravel().astype(np.int64)
    p_area = np.bincount(shown_flat)
    on_background = np.bincount(shown_flat, weights=(truth.ravel() == 0), minlength=p_area.size)
    out = [(int(t_area[t]), "missed", int(t)) for t in t_ids.tolist() if t not in matched_t]
    out += [(int(p_area[p]), "false", int(p)) for p in p_ids.tolist()
            if p not in matched_p and on_background[p] * 2 >= p_area[p]]
    return sorted(out, reverse=True)


Error = tuple[str, int]  # ("missed", true id) or ("false", shown id)


def fix(shown: np.ndarray, truth: np.ndarray, chosen: list[Error]) -> tuple[np.ndarray, np.ndarray]:
    """(labels after the user fixed the ``chosen`` errors, pixels changed)."""
    labels = shown.astype(np.int64, copy=True)
    next_id = int(labels.max()) + 1
    for kind, obj in chosen:
        if kind == "false":
            labels[shown == obj] = 0
            continue
        inside = truth == obj
        covering = np.unique(shown[inside])
        cover = np.isin(shown, covering[covering > 0]) & ((truth == 0) | inside)
        labels[cover] = 0
        labels[inside] = next_id
        next_id += 1
    return labels, labels != shown


def fix_largest(shown: np.ndarray, truth: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels after the user's n fixes, pixels changed)."""
    return fix(shown, truth, [(kind, obj) for _size, kind, obj in errors(shown, truth)[:n]])


def errors_seen(candidate: Candidate, shown: np.ndarray, truth: np.ndarray,
                known: list[tuple[int, str, int]]) -> list[Error]:
    """The errors a user looking at ``candidate`` finds (by the truth): see the module
    docstring. ``known`` is :func:`errors` of ``shown``."""
    missed = {obj for _, kind, obj in known if kind == "missed"}
    false = {obj for _, kind, obj in known if kind == "false"}
    seen: list[Error] = []
    if candidate.kind == "object":
        if candidate.label in false:
            seen.append(("false", candidate.label))
        region = shown == candidate.label
    else:
        y0, x0, y1, x1 = candidate.bbox
        region = np.zeros(shown.shape, bool)
        region[y0:y1, x0:x1] = True
        region &= shown == 0
    t_area = np.bincount(truth.ravel().astype(np.int64))
    overlap = np.bincount(truth[region].astype(np.int64), minlength=t_area.size)
    size = int(region.sum())
    for t in np.flatnonzero(overlap[1:]) + 1:
        if int(t) in missed and overlap[t] * 5 >= min(t_area[t], size):
            seen.append(("missed", int(t)))
    return seen


def object_candidates(shown: np.ndarray, mask: np.ndarray) -> list[Candidate]:
    """Every object of ``shown`` not mostly corrected already, as a candidate to look at."""
    ids = np.unique(shown)
    out = []
    for obj in ids[ids > 0].tolist():
        pixels = shown == obj
        if mask[pixels].mean() < 0.5:
            ys, xs = np.nonzero(pixels)
            out.append(Candidate("object", obj, (ys.mean(), xs.mean()),
                                 (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1),
                                 int(pixels.sum()), 0.0, "picked at random"))
    return out


def look_at(candidates: list[Candidate], shown: np.ndarray, truth: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """The user looks at each candidate and fixes what it shows: (labels, changed, how
    many candidates showed an error)."""
    known = errors(shown, truth)
    chosen: list[Error] = []
    real = 0
    for candidate in candidates:
        seen = errors_seen(candidate, shown, truth, known)
        real += bool(seen)  # counts even when an earlier candidate showed the same error
        chosen += [e for e in seen if e not in chosen]
    labels, changed = fix(shown, truth, chosen)
    return labels, changed, real


def review_all(shown: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every error fixed and the whole image reviewed: the truth, all supervised."""
    return truth.astype(np.int64), np.ones(truth.shape, bool)


def predict(images: list[np.ndarray], model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labels and the probabilities they came from (one pass per image)."""
    labels, probs = [], []
    for image in images:
        store = ProbabilityStore()
        labels.append(napari_unet.segment(image, model, axes="CYX", on_probabilities=store))
        probs.append(store.plane(()))
    return labels, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("fluo", "histo", "em"), required=True)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--fixes", type=int, default=10,
                        help="errors fixed (largest) or candidates looked at (guided, random) "
                             "per round")
    parser.add_argument("--user", choices=("largest", "guided", "random"), default="largest")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--review", action="store_true", help="fully reviewed image instead")
    parser.add_argument("--steps", type=int, default=FINE_TUNE_CONFIG.steps)
    parser.add_argument("--time-limit", type=float, default=FINE_TUNE_CONFIG.time_budget)
    parser.add_argument("--anchor-weight", type=float, default=FINE_TUNE_CONFIG.anchor_weight)
    parser.add_argument("--context", type=float, default=TargetOptions().context)
    parser.add_argument("--no-polarity", action="store_true")
    parser.add_argument("--no-size", action="store_true")
    parser.add_argument("--lr", type=float, default=FINE_TUNE_CONFIG.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save-models", type=Path,
                        help="folder to save each round's model in (for guidance_precision.py)")
    args = parser.parse_args()
    config = replace(FINE_TUNE_CONFIG, lr=args.lr, seed=args.seed, anchor_weight=args.anchor_weight)
    options = FineTuneOptions(TargetOptions(args.context),
                              adapt_polarity=not args.no_polarity, adapt_size=not args.no_size)

    if args.save_models:
        args.save_models.mkdir(parents=True, exist_ok=True)
    case = load_case(args.case, args.data, args.seed)
    base = active = napari_unet.load_model(args.model)
    base_acc = accuracy(active, case.test)
    images = [img for img, _ in case.tune]
    truths = [t for _, t in case.tune]
    predicted, probs = predict(images, active)
    shown = [p.astype(np.int64) for p in predicted]
    earlier: list = [None] * len(images)  # the previous version's labels, once there is one
    corrected = [s.copy() for s in shown]
    masks = [np.zeros(s.shape, bool) for s in shown]
    rng = np.random.default_rng(args.seed)
    rows = [{"round": 0, "acc": round(base_acc, 3), "gain": 0.0}]
    print(json.dumps(rows[-1]), flush=True)
    for rnd in range(1, args.rounds + 1):
        looked = real = 0
        left = sum(len(errors(s, t)) for s, t in zip(shown, truths))
        for k, truth in enumerate(truths):
            if args.review:
                labels, changed = review_all(shown[k], truth)
            elif args.user == "largest":
                labels, changed = fix_largest(shown[k], truth, args.fixes)
            else:
                if args.user == "guided":
                    ranking = guide(shown[k], probs[k], active.config.task,
                                    active.config.postprocess, previous=earlier[k],
                                    exclude=masks[k]).candidates
                else:
                    objects = object_candidates(shown[k], masks[k])
                    ranking = [objects[i] for i in rng.permutation(len(objects))]
                labels, changed, n_real = look_at(ranking[:args.fixes], shown[k], truth)
                looked, real = looked + len(ranking[:args.fixes]), real + n_real
            # earlier corrections stay as they are: the user only adds
            corrected[k] = np.where(masks[k] & ~changed, corrected[k], labels)
            masks[k] |= changed
        start = time.perf_counter()
        # as the widget does: every round trains the base model on all corrections so far
        corrections = [Correction(image=i, labels=c, mask=m, axes="CYX")
                       for i, c, m in zip(images, corrected, masks)]
        candidate = napari_unet.fine_tune(base, corrections, steps=args.steps,
                                          time_budget=args.time_limit, config=config,
                                          options=options)
        seconds = time.perf_counter() - start
        if args.save_models:
            candidate.save(args.save_models / f"{args.case}-{args.user}-round{rnd}",
                           overwrite=True)
        previous = predicted
        new, new_probs = predict(images, candidate)
        check = check_round(previous, new, corrected, masks)
        cand_acc = accuracy(candidate, case.test)
        if check.accepted:
            active, earlier, predicted, probs = candidate, previous, new, new_probs
        acc = cand_acc if check.accepted else rows[-1]["acc"]
        shown = [paste_corrections(p, c, m).astype(np.int64)
                 for p, c, m in zip(predicted, corrected, masks)]
        info = candidate.config.provenance["fine_tune_rounds"][-1]
        rows.append({
            "round": rnd, "user": "review" if args.review else args.user,
            "errors_left": left, "looked_at": looked, "real_errors": real,
            "precision": round(real / looked, 3) if looked else None,
            "corrected_px": int(sum(m.sum() for m in masks)),
            "steps": info["steps"], "planned": info["steps_planned"],
            "seconds": round(seconds, 1), "accepted": check.accepted,
            "check": check.summary(), "candidate_acc": round(cand_acc, 3),
            "acc": round(acc, 3), "gain": round(acc - base_acc, 3),
            "invert": info["invert"], "input_scale": info["input_scale"],
            "diameter_found": info["object_diameter_found"],
        })
        print(json.dumps(rows[-1]), flush=True)
    what = ("fully reviewed" if args.review else f"{args.fixes} fixes/round" if args.user ==
            "largest" else f"{args.user} user, {args.fixes} looked at/round")
    print(f"\ncase {args.case}, {what}, {args.steps} steps, anchor {args.anchor_weight}, "
          f"context {args.context}, seed {args.seed}")
    print("| round | errors left | real errors / looked at | corrected px | steps | s | check | "
          "candidate acc@0.5 | active acc@0.5 | gain |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows[1:]:
        verdict = "accepted" if r["accepted"] else "refused"
        seen = f"{r['real_errors']}/{r['looked_at']}" if r["looked_at"] else "-"
        print(f"| {r['round']} | {r['errors_left']} | {seen} | {r['corrected_px']} | "
              f"{r['steps']} | {r['seconds']:.0f} | {verdict}: {r['check']} | "
              f"{r['candidate_acc']:.3f} | {r['acc']:.3f} | {r['gain']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
