"""Peak memory of ``napari_unet.segment`` and of the out-of-core CLI on large 2D planes
(issues 4 and 5).

Each plane size runs in a fresh subprocess so ``ru_maxrss`` (the process's peak resident
set) is not inherited from a larger run. The baseline is the peak RSS after importing
napari_unet and torch, loading the model and building the synthetic plane; the reported
figure is the peak after ``segment`` minus that baseline (i.e. what segmentation itself
adds on top of the input image).

    .venv/bin/python benchmarks/memory.py --sizes 4096 8192 16384 --json runs/memory.json
    .venv/bin/python benchmarks/memory.py --cli --sizes 16384 30000 --json runs/memory_cli.json
    .venv/bin/python benchmarks/memory.py --cli --depth 512 --sizes 2048 --json runs/stack_cli.json

With ``--cli`` the plane is first written as a tiled BigTIFF (tile by tile, never whole
in memory), then ``napari-unet segment --format zarr`` runs on it in a child process: the
file is read lazily and labels go to an OME-Zarr block by block. The figure is that
process's whole peak RSS (Python, torch and the model included).

The plane is a real DSB 2018 fluorescence test image (channel 0, uint8) tiled with numpy
to the requested side. CPU, shipped ``nuclei`` model, default settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018_fluo" / "test" / "images"

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
import napari_unet
from napari_unet.io import read_image

side, path, model_name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(torch.get_num_threads())
img = np.asarray(read_image(path).data)
if img.ndim == 3:
    img = img[..., 0] if img.shape[-1] <= 4 else img[0]
img = img.astype(np.uint8, copy=False)
reps = (-(-side // img.shape[0]), -(-side // img.shape[1]))
plane = np.ascontiguousarray(np.tile(img, reps)[:side, :side])
model = napari_unet.load_model(model_name)
# warm up torch's kernels on a small crop so one-off allocations count in the baseline
napari_unet.segment(plane[:256, :256], model, axes="YX", device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
labels = napari_unet.segment(plane, model, axes="YX", device="cpu")
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(side=side, baseline_kib=base, peak_kib=peak, seconds=dt,
                      labels_dtype=str(labels.dtype), n_objects=int(labels.max()),
                      input_mib=plane.nbytes / 2**20, threads=torch.get_num_threads())))
"""


def write_big_tiff(path: Path, side: int, image: Path, depth: int = 0) -> None:
    """A side x side uint8 tiled BigTIFF (``depth`` planes of it when > 0) made of copies of
    a real image, tile by tile; each plane is shifted so the planes differ."""
    import numpy as np
    import tifffile

    from napari_unet.io import read_image

    img = np.asarray(read_image(image).data)
    img = (img[..., 0] if img.shape[-1] <= 4 else img[0]) if img.ndim == 3 else img
    img = img.astype(np.uint8, copy=False)
    tile = 512
    reps = (-(-tile // img.shape[0]) + 1, -(-tile // img.shape[1]) + 1)
    big = np.tile(img, reps)

    def tiles():
        for z in range(max(depth, 1)):
            for y in range(0, side, tile):
                for x in range(0, side, tile):
                    oy, ox = (y + 7 * z) % img.shape[0], (x + 13 * z) % img.shape[1]
                    yield big[oy:oy + tile, ox:ox + tile]

    shape = (depth, side, side) if depth else (side, side)
    tifffile.imwrite(path, tiles(), shape=shape, dtype=np.uint8, tile=(tile, tile),
                     bigtiff=True, compression="zlib", photometric="minisblack",
                     metadata={"axes": "ZYX" if depth else "YX"})


def run_cli(side: int, image: Path, model: str, scratch: Path, depth: int = 0) -> dict:
    """Peak RSS of ``napari-unet segment --format zarr`` on a side² plane (or a stack of
    ``depth`` such planes, read lazily when over 1 GiB)."""
    import resource
    import shutil
    import time

    name = f"stack_{depth}x{side}" if depth else f"plane_{side}"
    src = scratch / f"{name}.tif"
    if not src.exists():
        write_big_tiff(src, side, image, depth)
    out = scratch / f"out_{name}"
    shutil.rmtree(out, ignore_errors=True)
    cli = Path(sys.executable).with_name("napari-unet")
    t0 = time.perf_counter()
    proc = subprocess.run([str(cli), "segment", str(src), "--model", model, "--out", str(out),
                           "--format", "zarr", "--device", "cpu"], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    if proc.returncode != 0:
        return dict(side=side, error=proc.stderr.strip().splitlines()[-1:], rc=proc.returncode)
    pixels = side * side * max(depth, 1)
    return dict(side=side, depth=depth, megapixels=pixels / 1e6, peak_mib=peak / 1024, seconds=dt,
                mp_per_s=pixels / 1e6 / dt, input_mib=pixels / 2**20,
                output=proc.stdout.strip().splitlines()[-1])


def first_image() -> Path:
    return sorted(p for p in DATA.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff"))[0]


def run_one(side: int, image: Path, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(side), str(image), model],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return dict(side=side, error=out.stderr.strip().splitlines()[-1:], rc=out.returncode)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    mp = side * side / 1e6
    row["megapixels"] = mp
    row["baseline_mib"] = row["baseline_kib"] / 1024
    row["peak_mib"] = row["peak_kib"] / 1024
    row["added_mib"] = (row["peak_kib"] - row["baseline_kib"]) / 1024
    row["mib_per_mp"] = row["added_mib"] / mp
    row["bytes_per_pixel"] = row["added_mib"] * 2**20 / (side * side)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cli", action="store_true", help="measure the out-of-core CLI path")
    parser.add_argument("--depth", type=int, default=0,
                        help="with --cli: a ZYX stack of this many planes per size")
    parser.add_argument("--scratch", type=Path, default=Path("runs/memory_scratch"),
                        help="folder for the big input TIFFs and outputs (--cli)")
    args = parser.parse_args()
    image = args.image or first_image()
    if args.cli:
        args.scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in args.sizes:  # increasing sizes: RUSAGE_CHILDREN keeps the maximum
        row = (run_cli(side, image, args.model, args.scratch, args.depth) if args.cli
               else run_one(side, image, args.model))
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    result = dict(image=str(image), model=args.model, rows=rows)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print()
    print_table(rows, args.cli)


def print_table(rows: list[dict], cli: bool) -> None:
    if cli:
        print("| planes x side² | MP | input MiB (uint8) | CLI peak RSS MiB | s | MP/s |")
        print("|---|---|---|---|---|---|")
    else:
        print("| plane | MP | baseline RSS MiB | peak RSS MiB | added MiB | MiB / MP | bytes / px | s |")
        print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['side']}² | error: {r['error']} |")
        elif cli:
            print(f"| {max(r['depth'], 1)} x {r['side']}² | {r['megapixels']:.0f} | "
                  f"{r['input_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['seconds']:.0f} | "
                  f"{r['mp_per_s']:.1f} |")
        else:
            print(f"| {r['side']}² | {r['megapixels']:.1f} | {r['baseline_mib']:,.0f} | "
                  f"{r['peak_mib']:,.0f} | {r['added_mib']:,.0f} | {r['mib_per_mp']:.1f} | "
                  f"{r['bytes_per_pixel']:.1f} | {r['seconds']:.1f} |")

if __name__ == "__main__":
    main()
