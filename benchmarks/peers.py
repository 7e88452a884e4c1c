"""Peer segmentation networks timed next to ours, on one real 512x512 crop, in one process.

Issue #4, benchmark 4. Runs with the separate peers venv (benchmarks/peers_setup.sh), never
the project's own: Cellpose and StarDist/TensorFlow are not napari-unet dependencies.

    bash benchmarks/peers_setup.sh
    /work/peers_venv/bin/python benchmarks/peers.py --out peers.json

All methods run in the same process, interleaved (round r times every method once), after
warm-up runs that are not counted; the table gives the median MP/s over the rounds with
min-max, ratios of medians, and the ratio of best runs (more robust when another process
shares the cores: torch's OpenMP threads slow down far more under contention than TF's).
Threads: torch.set_num_threads(2); TensorFlow intra-op 2 (inter-op 1).

What is timed (input: one 512x512 crop of a DSB 2018 fluorescence test image):
- ours: the shipped ``nuclei`` network alone, one forward pass over the whole crop, as
  segment() runs it (napari_unet.fastpath: folded BatchNorm, bf16 weights, channels_last;
  fp32 eager too), then our
  tiled ``Predictor.probabilities`` and the public ``napari_unet.segment`` end to end.
- Cellpose 3: CPnet with RANDOM weights (the built-in models download their weights), via
  its own ``core.run_net`` (224 tiles, overlap 0.1, batch 8, MKLDNN as CellposeModel sets it)
  and ``CellposeModel.eval(compute_masks=False)`` (normalisation + run_net; mask dynamics
  skipped: on random flows their cost means nothing).
- Cellpose-SAM (Cellpose 4, from the side directory the setup script fills): CPSAM with
  RANDOM weights in bf16 as CellposeModel ships it, via its ``core.run_net`` (256 tiles).
  One 256 tile takes seconds on 2 cores, so it runs on the crop's central 256x256 (one
  tile) unless ``--cpsam-size 512``. segment_anything and cellpose/transforms.py import
  torchvision at import time; where torchvision cannot be imported (here: no CPU build), a stub
  stands in for it (CPSAM's forward and run_net's tiling call none of it; only training
  augmentation does) and the row says so; ``--no-torchvision-stub`` skips Cellpose-SAM instead.
- StarDist 2D: ``StarDist2D(Config2D(n_rays=32, grid=(2,2)))`` (2D_versatile_fluo's config,
  unet defaults) with RANDOM weights, ``model.predict`` (prob + dist; no NMS), fp32 as shipped
  and with the Keras ``mixed_bfloat16`` policy.
No network access at run time: outbound internet connections raise (a guard below).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import socket
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_IMAGE = DATA / "dsb2018_fluo" / "test" / "images" / (
    "07fb37aafa6626608af90c1e18f6a743f29b6b233d2e427dcd1102df6a916cf5.png")
FALLBACK_IMAGE = REPO / "src" / "napari_unet" / "samples" / "nuclei_fluo.tif"
PEERS_VENV = Path(os.environ.get("PEERS_VENV", "/work/peers_venv"))
THREADS = 2


def no_internet() -> None:
    """Make any outbound IP connection fail, so nothing can download weights unnoticed."""
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"peers.py: network access blocked ({address})")
        return original(self, address)

    socket.socket.connect = connect


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_crop(path: Path, size: int) -> tuple[np.ndarray, dict]:
    from napari_unet.io import read_image

    img = np.asarray(read_image(path).data)
    if img.ndim == 3:  # DSB PNGs are RGB(A) with identical channels
        img = img[..., 0]
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    if min(img.shape) < size:
        raise ValueError(f"{path} is {img.shape}, smaller than {size}x{size}")
    crop = np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])
    return crop, {"path": str(path), "shape": list(img.shape), "dtype": str(img.dtype),
                  "crop": [y0, x0, size, size]}


def percentile_norm(img: np.ndarray, lo: float = 1.0, hi: float = 99.8) -> np.ndarray:
    a, b = np.percentile(img, (lo, hi))
    return ((img.astype(np.float32) - a) / max(b - a, 1e-6)).astype(np.float32)


class Method:
    def __init__(self, name, what, fn, pixels, vs, slow=False):
        self.name, self.what, self.fn, self.pixels, self.vs, self.slow = name, what, fn, pixels, vs, slow
        self.times: list[float] = []
        self.warmup_s: list[float] = []
        self.error: str | None = None


# ----------------------------------------------------------------------------- ours
def ours_methods(crop: np.ndarray) -> tuple[list[Method], dict]:
    import torch

    import napari_unet
    from napari_unet.device import cpu_has_fast_bf16
    from napari_unet.fastpath import inference_network, input_dtype
    from napari_unet.segment import Predictor, prepare_image

    model = napari_unet.load_model("nuclei")
    dev = torch.device("cpu")
    norm = prepare_image(crop, model, "YX").plane(())  # (C, Y, X) float32, our normalisation
    x32 = torch.from_numpy(norm)[None].contiguous()
    net32 = inference_network(model.network, dev, fast=False)
    net_fast = inference_network(model.network, dev, fast=True)  # what segment() runs
    x_fast = x32.to(input_dtype(net_fast)).contiguous(memory_format=torch.channels_last)

    def fast():
        with torch.inference_mode():
            net_fast(x_fast)

    def fp32():
        with torch.inference_mode():
            net32(x32)

    predictor = Predictor(napari_unet.load_model("nuclei"))
    seg_model = napari_unet.load_model("nuclei")
    px = crop.size
    info = {"model": "nuclei", "in_channels": model.in_channels, "tile_size": model.config.tile_size,
            "tile_overlap": model.config.tile_overlap, "cpu_has_fast_bf16": bool(cpu_has_fast_bf16()),
            "napari_unet": getattr(napari_unet, "__version__", "?")}
    return [
        Method("ours nuclei net (fast)", "one forward, whole 512x512, napari_unet.fastpath (BatchNorm "
               "folded, bf16 weights, channels_last: what segment runs)", fast, px,
               "ours nuclei net (fast)"),
        Method("ours nuclei net (fp32)", "one forward, whole 512x512, fp32 eager", fp32, px,
               "ours nuclei net (fp32)"),
        Method("ours Predictor.probabilities", "tiled network path (256 tiles, overlap 32, fast path) "
               "on the normalised crop", lambda: predictor.probabilities(norm), px,
               "ours Predictor.probabilities"),
        Method("ours segment()", "napari_unet.segment(crop, model, axes='YX'): normalise + tiled net "
               "+ post-processing -> labels", lambda: napari_unet.segment(crop, seg_model, axes="YX"),
               px, "ours segment()"),
    ], info


# ----------------------------------------------------------------------------- Cellpose 3
def cellpose3_methods(crop: np.ndarray, norm: np.ndarray) -> tuple[list[Method], dict]:
    from importlib.metadata import version

    import cellpose
    from cellpose import core, models

    cpm = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, nchan=2)
    assert not cpm.pretrained_model, "a pretrained model would mean a download"
    net = cpm.net
    img = np.stack([norm, np.zeros_like(norm)], -1)[None]  # (Lz, Y, X, 2) as eval builds it
    px = crop.size

    def run_net():
        core.run_net(net, img, batch_size=8, augment=False, tile_overlap=0.1, bsize=224)

    def evaluate():
        cpm.eval(crop, channels=[0, 0], diameter=cpm.diam_mean, compute_masks=False,
                 batch_size=8, augment=False, tile_overlap=0.1, bsize=224)

    info = {"version": version("cellpose"), "module": cellpose.__file__, "mkldnn": bool(cpm.mkldnn),
            "diam_mean": float(cpm.diam_mean), "nbase": list(cpm.nbase), "weights": "random (no download)"}
    return [
        Method("Cellpose 3 CPnet run_net", "core.run_net: 9 tiles of 224 (overlap 0.1), batch 8, fp32 + "
               "MKLDNN (as CellposeModel sets it on CPU), random weights; input pre-normalised",
               run_net, px, "ours Predictor.probabilities"),
        Method("Cellpose 3 eval (no masks)", "CellposeModel.eval(channels=[0,0], diameter=diam_mean, "
               "compute_masks=False): normalise + run_net, random weights, no mask dynamics",
               evaluate, px, "ours Predictor.probabilities"),
    ], info


# ----------------------------------------------------------------------------- Cellpose-SAM
class _Stub(types.ModuleType):
    """A stand-in module: any function taken from it raises when called."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"torchvision stub: {self.__name__}.{name} is not available")
        return unavailable


def torchvision_stub() -> None:
    """What importing segment_anything and Cellpose 4 touches: segment_anything's package
    import (transforms.functional, ops.boxes) and cellpose/transforms.py (transforms.functional,
    transforms._functional_tensor, used only by its training augmentation)."""
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.transforms._functional_tensor", "torchvision.ops", "torchvision.ops.boxes"]
    mods = {n: _Stub(n) for n in names}
    for n, m in mods.items():
        if "." in n:
            parent, child = n.rsplit(".", 1)
            setattr(mods[parent], child, m)
    mods["torchvision"].__version__ = "stub"
    sys.modules.update(mods)


def import_cellpose4(side_dir: Path, allow_stub: bool):
    """Import Cellpose 4 from its side directory under the name ``cellpose`` while Cellpose 3
    keeps it in the venv: swap the ``cellpose`` modules in sys.modules, then swap them back."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "cellpose" or k.startswith("cellpose.")}
    sys.path.insert(0, str(side_dir))
    notes = []
    try:
        try:
            import torchvision  # noqa: F401
            notes.append(f"torchvision {torchvision.__version__} imports")
        except Exception as exc:  # noqa: BLE001 - any failure: broken CUDA build, missing package
            notes.append(f"torchvision import failed: {type(exc).__name__}: {str(exc)[:120]}")
            for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
                del sys.modules[k]
            if not allow_stub:
                raise RuntimeError("; ".join(notes)) from exc
            torchvision_stub()
            notes.append("STUBBED torchvision: segment_anything's package import and cellpose/transforms.py "
                         "import it; the CPSAM forward and run_net's tiling do not call it")
        import cellpose as cp4
        from cellpose import core as core4
        from cellpose.vit import CPSAM
        assert Path(cp4.__file__).is_relative_to(side_dir), cp4.__file__
        return core4, CPSAM, notes
    finally:
        sys.path.remove(str(side_dir))
        for k in [k for k in sys.modules if k == "cellpose" or k.startswith("cellpose.")
                  or (k.split(".")[0] == "torchvision" and isinstance(sys.modules[k], _Stub))]:
            del sys.modules[k]  # the imported Cellpose 4 modules keep their own references
        sys.modules.update(saved)


def cpsam_methods(norm: np.ndarray, size: int, allow_stub: bool) -> tuple[list[Method], dict]:
    import torch

    side = PEERS_VENV / "cellpose4"
    dist = sorted(side.glob("cellpose-*.dist-info"))
    if not dist:
        raise RuntimeError(f"no Cellpose 4 in {side}: run benchmarks/peers_setup.sh")
    core4, CPSAM, notes = import_cellpose4(side, allow_stub)
    t = time.perf_counter()
    # CellposeModel(use_bfloat16=True) builds CPSAM(dtype=bf16) and load_model() then casts the
    # whole net to bf16; with no weights file we do that cast ourselves.
    net = CPSAM(dtype=torch.bfloat16).to(torch.bfloat16).eval()
    build_s = time.perf_counter() - t
    y0 = (norm.shape[0] - size) // 2
    sub = norm[y0:y0 + size, y0:y0 + size]
    img = np.stack([sub, np.zeros_like(sub), np.zeros_like(sub)], -1)[None]  # (1, Y, X, 3)
    ny = 1 if size <= 256 else int(np.ceil(1.2 * size / 256))

    def run_net():
        core4.run_net(net, img, batch_size=8, augment=False, tile_overlap=0.1, bsize=256)

    info = {"version": dist[-1].name.removeprefix("cellpose-").removesuffix(".dist-info"), "side_dir": str(side),
            "notes": notes, "build_seconds": round(build_s, 1), "size": size, "tiles": ny * ny,
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "weights": "random (no download)", "dtype": "bfloat16 weights (use_bfloat16=True default)"}
    stub = " [torchvision STUBBED]" if any("STUBBED" in n for n in notes) else ""
    return [
        Method("Cellpose-SAM run_net", f"core.run_net on the central {size}x{size} ({ny * ny} tile(s) of "
               f"256, overlap 0.1, batch 8), CPSAM ViT-L bf16 weights, random weights{stub}",
               run_net, size * size, "ours Predictor.probabilities", slow=True),
    ], info


# ----------------------------------------------------------------------------- StarDist
def stardist_methods(norm: np.ndarray) -> tuple[list[Method], dict]:
    from importlib.metadata import version

    import tensorflow as tf
    from csbdeep.utils.tf import keras_import
    from stardist.models import Config2D, StarDist2D

    keras = keras_import()
    methods, info = [], {"stardist": version("stardist"), "csbdeep": version("csbdeep"),
                         "tensorflow": tf.__version__, "keras": keras.__version__,
                         "weights": "random (no download)"}
    px = norm.size
    for policy in ("float32", "mixed_bfloat16"):
        try:
            keras.mixed_precision.set_global_policy(policy)
            conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)
            model = StarDist2D(conf, name=None, basedir=None)
            probe = model.predict(norm[:64, :64], axes="YX", show_tile_progress=False)
            info[f"{policy}_output_dtype"] = str(probe[0].dtype)
            info[f"{policy}_params"] = int(model.keras_model.count_params())

            def predict(model=model):
                model.predict(norm, axes="YX", show_tile_progress=False)

            label = "fp32 (as shipped)" if policy == "float32" else "Keras mixed_bfloat16"
            methods.append(Method(f"StarDist2D predict {label}", "model.predict (prob + dist, no NMS), "
                                  f"whole 512x512, one Keras predict call, {policy}, random weights, "
                                  "config as 2D_versatile_fluo (n_rays 32, grid 2x2, unet defaults)",
                                  predict, px, "ours Predictor.probabilities"))
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            info[f"{policy}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"StarDist {policy} failed: {info[f'{policy}_error']}")
        finally:
            keras.mixed_precision.set_global_policy("float32")
    info["config"] = {k: v for k, v in vars(Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)).items()
                      if k.startswith(("unet_", "n_rays", "grid", "net_conv", "backbone"))}
    return methods, info


# ----------------------------------------------------------------------------- runner
def timed(m: Method) -> float:
    gc.collect()
    t = time.perf_counter()
    m.fn()
    return time.perf_counter() - t


NET_REF = "ours nuclei net (fast)"


def table(methods: list[Method], by_name: dict[str, Method]) -> str:
    """Ratios are MP/s over ours: over our whole-crop network pass (bf16+CL), and over the
    'ours' row at the same level (tiled network path for the peers' network paths)."""
    def med_mps(m):
        return m.pixels / statistics.median(m.times) / 1e6

    def best_mps(m):
        return m.pixels / min(m.times) / 1e6

    def ratio(m, ref, f=med_mps):
        if ref is None or not ref.times:
            return "-"
        return "1" if ref is m else f"{f(m) / f(ref):.3g}"

    rows = [("| method | what was timed | MP/s median (min-max) | runs | ratio to ours net (bf16+CL) "
             "| ratio to ours, same level (row) | same, best runs |"), "|---|---|---|---|---|---|---|"]
    for m in methods:
        if m.error or not m.times:
            rows.append(f"| {m.name} | {m.what} | failed: {m.error} | 0 | - | - | - |")
            continue
        lo = m.pixels / max(m.times) / 1e6
        same = by_name.get(m.vs)
        rows.append(f"| {m.name} | {m.what} | {med_mps(m):.3g} ({lo:.3g}-{best_mps(m):.3g}) | {len(m.times)} "
                    f"| {ratio(m, by_name.get(NET_REF))} | {ratio(m, same)} ({m.vs}) "
                    f"| {ratio(m, same, best_mps)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--image", type=Path, default=None, help="2D image (default: a DSB 2018 fluo test image)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--slow-rounds", type=int, default=2,
                        help="timed rounds for slow methods (Cellpose-SAM), in the first rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per method first")
    parser.add_argument("--cpsam-size", type=int, default=256, choices=(256, 512))
    parser.add_argument("--no-torchvision-stub", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=("cellpose3", "cpsam", "stardist"))
    args = parser.parse_args()
    no_internet()
    load_before = os.getloadavg()

    # Threads first: TensorFlow only accepts them before its runtime starts.
    import torch
    torch.set_num_threads(THREADS)
    tf_info: dict = {}
    if "stardist" not in args.skip:
        try:
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf_info = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
        except Exception as exc:  # noqa: BLE001
            tf_info = {"error": f"{type(exc).__name__}: {exc}"}

    path = args.image or (DEFAULT_IMAGE if DEFAULT_IMAGE.exists() else FALLBACK_IMAGE)
    crop, image_info = load_crop(path, args.size)
    norm = percentile_norm(crop)  # peers' input: 1-99.8 percentile (StarDist's usual normalisation)

    methods, infos = [], {}
    groups = [("ours", lambda: ours_methods(crop))]
    if "cellpose3" not in args.skip:
        groups.append(("cellpose3", lambda: cellpose3_methods(crop, norm)))
    if "cpsam" not in args.skip:
        groups.append(("cellpose_sam", lambda: cpsam_methods(norm, args.cpsam_size, not args.no_torchvision_stub)))
    if "stardist" not in args.skip:
        groups.append(("stardist", lambda: stardist_methods(norm)))
    for name, build in groups:
        t = time.perf_counter()
        try:
            ms, info = build()
            methods += ms
            infos[name] = info
            log(f"built {name} in {time.perf_counter() - t:.1f}s: {json.dumps(info, default=str)[:400]}")
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is recorded, not fatal
            infos[name] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}",
                           "traceback": traceback.format_exc()[-2000:]}
            log(f"{name} unavailable: {infos[name]['error']}")
    by_name = {m.name: m for m in methods}

    for m in methods:  # warm-up, not counted
        try:
            for _ in range(args.warmup):
                m.warmup_s.append(timed(m))
            log(f"warm-up {m.name}: {[round(s, 3) for s in m.warmup_s]} s")
        except Exception as exc:  # noqa: BLE001
            m.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log(f"{m.name} failed in warm-up: {m.error}")
    start = time.perf_counter()
    round_load = []  # 1-min load average after each round: a co-tenant shows up here
    for r in range(args.rounds):
        for m in methods:
            if m.error or (m.slow and r >= args.slow_rounds):
                continue
            m.times.append(timed(m))
        round_load.append(round(os.getloadavg()[0], 2))
        log(f"round {r + 1}/{args.rounds} done, {time.perf_counter() - start:.0f}s, load {round_load[-1]}")

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    md = table(methods, by_name)
    print(md)
    print(f"\ncommand: `{cmd}`")
    print(f"image: {image_info['path']} crop (y0, x0, h, w) = {image_info['crop']}; torch threads "
          f"{torch.get_num_threads()}, TF {tf_info}; warm-up {args.warmup} run(s) per method excluded; "
          f"1-min load average before {load_before[0]:.2f}, after each round {round_load} on "
          f"{os.cpu_count()} CPUs (this run alone accounts for about {THREADS})")
    print("per-round seconds: " + "; ".join(f"{m.name}: {[round(t, 3) for t in m.times]}" for m in methods))
    out = {"command": cmd, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "tf_threads": tf_info,
           "image": image_info, "peers_input_normalisation": "percentile 1-99.8 -> float32",
           "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "loadavg_after_each_round": round_load,
           "rounds": args.rounds, "slow_rounds": args.slow_rounds, "warmup": args.warmup,
           "groups": infos, "markdown": md, "results": []}
    install = PEERS_VENV / "peers_install.tsv"
    if install.exists():
        lines = install.read_text().splitlines()
        keys = lines[0].split("\t")
        out["install"] = [dict(zip(keys, line.split("\t"))) for line in lines[1:]]
    for m in methods:
        row = {"method": m.name, "what": m.what, "pixels": m.pixels, "ratio_reference": m.vs,
               "warmup_seconds": m.warmup_s, "seconds": m.times, "error": m.error}
        if m.times:
            med = statistics.median(m.times)
            row.update({"median_seconds": med, "MP/s_median": m.pixels / med / 1e6,
                        "MP/s_min": m.pixels / max(m.times) / 1e6, "MP/s_max": m.pixels / min(m.times) / 1e6})
        out["results"].append(row)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
