"""Experiment for issue 11: does a distance-to-boundary output split touching nuclei better?

``train`` adds a 4th output (a sigmoid) to the shipped ``nuclei`` network: each object's
distance to its boundary divided by the object's largest one (1 at its centre, 0 on its
outline), derived from the interior class of the training target, so augmentation needs no
change. The whole network then trains on ``dsb2018_fluo/train`` (the shipped model's 24
validation images held out) with the shipped loss plus binary cross-entropy on that output:
batch 8 x 256^2, AdamW, lr 1e-3 with 50 warm-up steps and cosine decay. It resumes from its
checkpoint (``--out``/ckpt.pt). ``--distance-weight 0`` is the control: the same run
(network, batches, schedule) with the distance output left out of the loss.

``evaluate`` scores, with whole-image inference on the CPU: the shipped model; the new
network with seeds from its interior class (the shipped post-processing over a grid of seed
thresholds); and the new network with seeds from its distance output over a grid of
thresholds, grown by a watershed on the distance over the same foreground. Choose on
``val``, then score ``test`` once. Run from the repository root:

    .venv/bin/python benchmarks/distance_head.py train --steps 3000 --out runs/distance
    .venv/bin/python benchmarks/distance_head.py evaluate val --weights runs/distance/ckpt.pt
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet import load_model, segment
from napari_unet.architecture import UNetArchitecture
from napari_unet.data import find_pairs, load_folder, make_sample, read_pair
from napari_unet.device import autocast
from napari_unet.losses import instance_loss
from napari_unet.metrics import iou_pairs
from napari_unet.model import Model
from napari_unet.postprocess import instance_labels, remove_small
from napari_unet.scores import score_image, summarise
from napari_unet.targets import INTERIOR
from napari_unet.training import TrainConfig, _Batches

DATA = Path("../shared/data/dsb2018_fluo")
LR = 1e-3
CPU = torch.device("cpu")


def split_pairs(split: str, base: Model) -> list[tuple[Path, Path]]:
    """(image, mask) paths of ``val`` (the shipped model's validation images, from the
    training folder) or ``test``."""
    if split == "test":
        return find_pairs(DATA / "test")
    held_out = set(base.config.provenance["val_images"])
    return [pair for pair in find_pairs(DATA / "train") if pair[0].stem in held_out]


def distance_target(target: np.ndarray) -> np.ndarray:
    """Per-object normalised distance to the boundary from a (B, Y, X) class-map batch."""
    out = np.zeros(target.shape, np.float32)
    for b in range(target.shape[0]):
        inner = target[b] == INTERIOR
        parts, n = ndi.label(inner)
        if not n:
            continue
        distance = ndi.distance_transform_edt(inner).astype(np.float32)
        top = ndi.maximum(distance, parts, index=np.arange(1, n + 1)).astype(np.float32)
        out[b] = distance / np.concatenate([[1.0], np.maximum(top, 1.0)]).astype(np.float32)[parts]
    return out


def four_output_net() -> tuple[Model, UNetArchitecture]:
    """The shipped ``nuclei`` and a copy of its network with a 4th output (initialised as the
    interior's)."""
    base = load_model("nuclei")
    net_config = base.config.network
    net = UNetArchitecture(out_channels=4, in_channels=net_config.in_channels,
                           base=net_config.base, depth=net_config.depth, norm=net_config.norm,
                           upsampling=net_config.upsampling, dropout=net_config.dropout)
    state = base.network.state_dict()
    weight, bias = state.pop("head.weight"), state.pop("head.bias")
    state["head.weight"] = torch.cat([weight, weight[1:2]], 0)
    state["head.bias"] = torch.cat([bias, bias[1:2]], 0)
    net.load_state_dict(state)
    return base, net


def train(steps: int, out: Path, distance_weight: float = 1.0) -> None:
    base, net = four_output_net()
    held_out = set(base.config.provenance["val_images"])
    samples = [s for s in load_folder(DATA / "train", base.config) if s.name not in held_out]
    batches = _Batches(samples, TrainConfig(steps=steps, seed=1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, step = out / "ckpt.pt", 0
    if checkpoint.exists():
        state = torch.load(checkpoint)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["opt"])
        step = state["step"]
    net = net.to(memory_format=torch.channels_last).train()
    start, losses = time.perf_counter(), []
    while step < steps:
        lr = LR * min(1, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, w = batches[step]
        distance = torch.from_numpy(distance_target(y.numpy()))
        with autocast(CPU, True):
            logits = net(x.contiguous(memory_format=torch.channels_last))
        logits = logits.float()
        classes = instance_loss(logits[:, :3], y, w, 2.0)
        bce = F.binary_cross_entropy_with_logits(logits[:, 3], distance, reduction="none")
        centre = (bce * w).sum() / w.sum().clamp_min(1)
        optimizer.zero_grad()
        (classes + distance_weight * centre).backward()
        optimizer.step()
        losses.append((classes.item(), centre.item()))
        step += 1
        if step % 50 == 0:
            mean = np.mean(losses[-50:], 0)
            print(f"step {step} loss3 {mean[0]:.4f} dist {mean[1]:.4f} lr {lr:.2e} "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
        if step % 250 == 0 or step == steps:
            torch.save({"net": net.state_dict(), "opt": optimizer.state_dict(), "step": step},
                       out / "ckpt.tmp")
            (out / "ckpt.tmp").rename(checkpoint)


def probabilities(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Softmax of the 3 classes (and sigmoid of a 4th output) for a whole normalised image."""
    h, w = image.shape[1:]
    padded = np.pad(image, ((0, 0), (0, -h % 16), (0, -w % 16)), mode="reflect")
    with torch.inference_mode(), autocast(CPU, True):
        logits = net(torch.from_numpy(padded)[None]).float()[0, :, :h, :w]
    probs = torch.softmax(logits[:3], 0)
    if logits.shape[0] == 4:
        probs = torch.cat([probs, torch.sigmoid(logits[3:])], 0)
    return probs.numpy()


def distance_labels(probs: np.ndarray, threshold: float, base: Model,
                    interior: float | None = None) -> np.ndarray:
    """Seeds where the distance output passes ``threshold`` (and, with ``interior``, the
    interior class passes that), grown over the foreground by a watershed on the distance."""
    post = base.config.postprocess
    foreground = probs[0] < 1.0 - post.foreground_threshold
    core = probs[3] > threshold
    if interior is not None:
        core &= probs[1] > interior
    seeds = remove_small(ndi.label(core)[0], post.min_seed_size)
    return remove_small(watershed(-probs[3], seeds, mask=foreground | (seeds > 0)), post.min_size)


def evaluate(split: str, weights: Path, seed_grid: list[float], distance_grid: list[float]) -> dict:
    base, net = four_output_net()
    net.load_state_dict(torch.load(weights)["net"])
    net.eval()
    base.network.eval()
    post = base.config.postprocess
    samples = [make_sample(image_path.stem, *read_pair(image_path, mask_path, 1), base.config, "CYX")
               for image_path, mask_path in split_pairs(split, base)]
    scores: dict[str, list] = {"shipped nuclei": []}
    for s in samples:
        shipped = probabilities(base.network, s.image)
        new = probabilities(net, s.image)
        scores["shipped nuclei"].append(score_image(s.name, s.labels, instance_labels(shipped, post)))
        for t in seed_grid:
            labels = instance_labels(new[:3], replace(post, seed_threshold=t))
            scores.setdefault(f"new, interior seeds > {t}", []).append(score_image(s.name, s.labels, labels))
        for t in distance_grid:
            scores.setdefault(f"new, distance seeds > {t}", []).append(
                score_image(s.name, s.labels, distance_labels(new, t, base)))
            for i in seed_grid:
                scores.setdefault(f"new, distance > {t} and interior > {i}", []).append(
                    score_image(s.name, s.labels, distance_labels(new, t, base, i)))
    results = {}
    for name, per_image in scores.items():
        row = summarise(per_image)["per_threshold"][0]
        results[name] = {k: round(row[k], 4) for k in ("accuracy", "f1", "precision", "recall")}
        print(f"{split} {name:30s} acc@0.5 {row['accuracy']:.3f} F1 {row['f1']:.3f} "
              f"P {row['precision']:.3f} R {row['recall']:.3f}", flush=True)
    return results


def diagnose(split: str) -> dict[str, int]:
    """Why the shipped model misses nuclei (IoU < 0.5): merged (most of the nucleus lies in
    a predicted object that also covers most of another one) or otherwise missed."""
    base = load_model("nuclei")
    counts = {"true": 0, "found": 0, "merged": 0, "other": 0}
    for image_path, mask_path in split_pairs(split, base):
        image, true = read_pair(image_path, mask_path, 1)
        pred = np.asarray(segment(image, base, "CYX"))
        true_ids, pred_ids, i, j, iou = iou_pairs(true, pred)
        true_area = np.bincount(true.ravel().astype(np.int64))[true_ids]
        pred_area = np.bincount(pred.ravel().astype(np.int64))[pred_ids]
        overlap = iou * (true_area[i] + pred_area[j]) / (1 + iou)
        found = set(i[iou > 0.5].tolist())
        covers: dict[int, list[int]] = {}
        for t, p in zip(i[2 * overlap > true_area[i]], j[2 * overlap > true_area[i]]):
            covers.setdefault(int(p), []).append(int(t))
        merged = {t for ts in covers.values() if len(ts) > 1 for t in ts}
        for t in range(true_ids.size):
            counts["true"] += 1
            counts["found" if t in found else "merged" if t in merged else "other"] += 1
    print(split, counts)
    return counts


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--out", type=Path, default=Path("runs/distance"))
    t.add_argument("--distance-weight", type=float, default=1.0,
                   help="0: the control run, the same training without the distance output")
    e = sub.add_parser("evaluate")
    e.add_argument("split", choices=("val", "test"))
    e.add_argument("--weights", type=Path, required=True)
    e.add_argument("--seeds", default="0.8,0.85,0.9,0.95")
    e.add_argument("--distances", default="0.1,0.2,0.3,0.4,0.5")
    e.add_argument("--json", type=Path)
    d = sub.add_parser("diagnose")
    d.add_argument("split", choices=("val", "test"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.command == "train":
        train(args.steps, args.out, args.distance_weight)
    elif args.command == "diagnose":
        diagnose(args.split)
    else:
        results = evaluate(args.split, args.weights, _numbers(args.seeds), _numbers(args.distances))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
