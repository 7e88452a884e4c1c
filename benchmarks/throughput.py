"""Network and end-to-end throughput on this machine, next to its measured matrix ceiling.

    .venv/bin/python benchmarks/throughput.py --runs 5

Reports medians of ``--runs`` runs, all measured in one process so ratios compare:
1. bf16 and fp32 matrix-product ceilings (GFLOP/s) with the current torch thread count;
2. network-only MP/s per shipped model and path (see ``network_mps``), and each path's
   share of its ceiling (FLOPs counted by torch);
3. end-to-end ``segment`` of a 2048x2048 plane built from real DSB nuclei tiles, with the
   post-processing time measured on its own; then again with the allocator setting the CLI
   makes (``device.keep_freed_memory``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import napari_unet
from napari_unet.device import autocast, keep_freed_memory
from napari_unet.fastpath import inference_network, input_dtype
from napari_unet.io import read_image
from napari_unet.postprocess import instance_labels
from napari_unet.segment import Predictor, prepare_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():  # GPU work is queued: wait for it (device_speed.py)
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(dtype: torch.dtype, runs: int, n: int = 2048) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    t = median_time(lambda: [a @ b for _ in range(4)], runs)
    return 4 * 2 * n**3 / t / 1e9


PATHS = ("fp32", "autocast", "fast", "fast+compile")


def network_mps(model, size: int, path: str, runs: int) -> tuple[float, float]:
    """(MP/s, FLOP per pixel) of one forward pass on a size x size tile.

    Paths: ``fp32`` eager; ``autocast`` = bf16 autocast + channels_last on the training
    network (the fast path until November 2026); ``fast`` = napari_unet.fastpath (BatchNorm
    folded, weights cast once to bf16, channels_last: what ``segment`` uses);
    ``fast+compile`` = the same through torch.compile (compile time excluded).
    """
    dev = torch.device("cpu")
    if path in ("fast", "fast+compile"):
        net = inference_network(model.network, dev, fast=True, compile=path == "fast+compile")
        dtype, use_autocast = input_dtype(net), False
    else:
        net = inference_network(model.network, dev, fast=False)
        dtype, use_autocast = torch.float32, path == "autocast"
    fmt = torch.contiguous_format if path == "fp32" else torch.channels_last
    net = net.to(memory_format=fmt)
    x = torch.randn(1, model.in_channels, size, size).to(dtype).contiguous(memory_format=fmt)

    def run() -> None:
        with torch.inference_mode(), autocast(dev, enabled=use_autocast):
            net(x)

    run()  # compiles on the first call for fast+compile
    with FlopCounterMode(display=False) as counter:
        inference_network(model.network, dev, fast=False)(x.float())
    t = median_time(run, runs)
    return size * size / t / 1e6, counter.get_total_flops() / (size * size)


def big_plane(size: int = 2048, paths=None) -> np.ndarray:
    """A real-looking plane: 256 x 256 DSB fluorescence images (``paths``; default: the
    first 40 of the shared test split) tiled to size x size."""
    if paths is None:
        paths = sorted((DATA / "dsb2018_fluo" / "test" / "images").glob("*.png"))[:40]
    tiles = []
    for p in paths:
        img = np.asarray(read_image(p).data)
        img = img[..., 0] if img.ndim == 3 else img
        if img.shape == (256, 256):
            tiles.append(img)
    reps = size // 256
    rows = [np.concatenate([tiles[(r * reps + c) % len(tiles)] for c in range(reps)], 1) for r in range(reps)]
    return np.concatenate(rows, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["nuclei", "membrane"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    args = parser.parse_args()
    out: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__,
                 "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    out["ceiling_gflops"] = {"fp32": matmul_ceiling(torch.float32, args.runs),
                             "bf16": matmul_ceiling(torch.bfloat16, args.runs)}
    print(json.dumps(out), flush=True)
    out["network"] = []
    for name in args.models:
        model = napari_unet.load_model(name)
        for size in args.tiles:
            for path in args.paths:
                mps, flop_px = network_mps(model, size, path, args.runs)
                ceiling = out["ceiling_gflops"]["fp32" if path == "fp32" else "bf16"] * 1e9 / flop_px / 1e6
                row = {"model": name, "tile": size, "path": path,
                       "MP/s": round(mps, 2), "kFLOP/px": round(flop_px / 1e3, 1),
                       "ceiling MP/s": round(ceiling, 1), "% of ceiling": round(100 * mps / ceiling, 1)}
                out["network"].append(row)
                print(json.dumps(row), flush=True)
    model = napari_unet.load_model("nuclei")
    plane = big_plane()
    t_total = median_time(lambda: napari_unet.segment(plane, model, axes="YX"), max(1, args.runs // 2))
    predictor = Predictor(model)
    norm = prepare_image(plane, model, "YX").plane(())
    probs = predictor.probabilities(norm)
    t_net = median_time(lambda: predictor.probabilities(norm), max(1, args.runs // 2))
    t_post = median_time(lambda: instance_labels(probs, model.config.postprocess), args.runs)
    keep_freed_memory()  # what the CLI does at start; measured after the library default
    t_cli = median_time(lambda: napari_unet.segment(plane, model, axes="YX"), max(1, args.runs // 2))
    out["end_to_end_2048"] = {"seconds": round(t_total, 3), "MP/s": round(plane.size / t_total / 1e6, 2),
                              "seconds_cli_allocator": round(t_cli, 3),
                              "network_seconds": round(t_net, 3), "postprocess_seconds": round(t_post, 3)}
    print(json.dumps(out["end_to_end_2048"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
