"""The ``napari-unet`` command: segment, train, evaluate, fine-tune and list models headless.

Each sub-command is a thin shell over the public API; errors the package raises on
purpose are printed as one line and exit with status 2, never as a traceback; its
warnings (for example a calibration that was dropped) as one line each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ._version import __version__
from .augment import AUGMENTATIONS
from .batch import FORMATS, SCHEDULER, FileResult, segment_files
from .bioimageio import export_bioimageio
from .blocks import BlockConfig
from .color import RGB_MODES
from .config import COUNT, PRESETS, NetworkConfig, Rule, rule_of
from .corrections import Correction
from .device import DEVICE_CHOICES, keep_freed_memory
from .errors import (
    Cancelled,
    InvalidSettingError,
    NapariUnetError,
    NapariUnetWarning,
    OutputWriteError,
)
from .evaluation import evaluate
from .finetune import FINE_TUNE_CONFIG, describe_round, fine_tune
from .io import file_name, read_image, read_labels
from .model import SUFFIX, model_path
from .options import SegmentOptions
from .registry import list_models, load_model, save_user_model, user_dir
from .round_check import check_round
from .segment import segment
from .training import VAL_FRACTION, VAL_LAST, TrainConfig, train


class _Bar:
    """A tqdm bar fed by the core's (done, total) progress callbacks."""

    def __init__(self, desc: str) -> None:
        self.bar = tqdm(total=1, desc=desc, unit="tile", leave=False, dynamic_ncols=True,
                        disable=None)

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _permille_bar(desc: str) -> tqdm:
    """A bar for work measured as a fraction (training stops on steps or on time)."""
    return tqdm(total=1000, desc=desc, unit="‰", leave=False, disable=None)


def _option(rule: Rule) -> Callable[[str], Any]:
    """An argparse type that refuses what ``rule``, the library's rule for the same
    setting, refuses: exit status 2 and one line naming the option and the allowed values."""

    def parse(text: str) -> Any:
        value = rule.parse(text)
        if not rule.allows(value):
            raise argparse.ArgumentTypeError(f"must be {rule.text}, got {text}")
        return value

    return parse


def _field(cls: type, name: str) -> Callable[[str], Any]:
    """The argparse type of an option that sets the dataclass field ``cls.name``."""
    return _option(rule_of(cls, name))


def cmd_segment(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    options = SegmentOptions(
        device=args.device, tile_size=args.tile_size, tile_overlap=args.overlap,
        batch_size=args.batch_size, seed_threshold=args.seed_threshold,
        foreground_threshold=args.foreground_threshold, min_size=args.min_size,
        object_size=args.object_size, stitch_3d=args.stitch_3d, fast=not args.no_fast,
        compile=args.compile, blocks=BlockConfig(args.block_size, args.halo),
        rgb=args.rgb, tta=args.tta, voxel_size=args.voxel_size,
    )
    what = "objects" if model.config.task == "instance" else "classes"
    bars: list[_Bar] = []

    def progress_for(source: str) -> _Bar:
        bars.append(_Bar(f"segment {Path(source).name}"))
        return bars[-1]

    def on_result(result: FileResult) -> None:
        while bars:
            bars.pop().close()
        if result.error:
            where = "" if result.source in result.error else f"{Path(result.source).name}: "
            print(f"napari-unet: error: {where}{result.error}", file=sys.stderr)
            return
        how = " (out of core)" if result.out_of_core else ""
        print(f"{result.source}: {result.n_objects} {what} -> {result.labels}{how}")
        if result.overlay:
            print(f"  overlay -> {result.overlay}")

    results = segment_files(
        args.inputs, args.out, args.model, options, axes=args.axes, fmt=args.format,
        overwrite=args.overwrite,
        overlay=args.overlay, scheduler=args.scheduler, workers=args.workers,
        on_result=on_result, progress_for=progress_for,
    )
    failed = sum(r.error is not None for r in results)
    if failed and len(results) > 1:
        print(f"napari-unet: {failed} of {len(results)} inputs failed; the others were "
              f"written", file=sys.stderr)
    return 2 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    out = model_path(args.out)
    if args.resume and not args.checkpoint:
        raise InvalidSettingError("--resume continues the run saved in --checkpoint; name "
                                  "that file with --checkpoint PATH")
    if out.exists() and not args.overwrite:
        raise OutputWriteError(f"{out} exists; pass --overwrite or choose another --out")
    config = TrainConfig(
        steps=args.steps, time_budget=args.time_budget * 60 if args.time_budget else None,
        batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr, seed=args.seed,
        device=args.device, fast=not args.no_fast, val_every=args.val_every,
        patience=args.patience or None, augment=AUGMENTATIONS[args.augment],
        data_workers=args.data_workers,
    )
    bar = _permille_bar("train")

    def on_report(rep) -> None:
        bar.n = int(rep.progress * 1000)
        bar.set_postfix(step=rep.step, loss=f"{rep.loss:.3f}",
                        val=f"{rep.best_val_loss:.3f}" if rep.best_val_loss else "-")
        if rep.val_loss is not None:
            tqdm.write(f"step {rep.step}: loss {rep.loss:.4f} val {rep.val_loss:.4f} "
                       f"({rep.elapsed:.0f} s)")

    base = load_model(args.base_model) if args.base_model else None
    try:
        model = train(
            args.data, model=base, preset_name=args.preset, task=args.task,
            class_names=tuple(args.class_names) if args.class_names else None,
            in_channels=args.in_channels, invert_masks=args.invert_masks,
            val_fraction=args.val_fraction, val_last=args.val_last, config=config,
            name=args.name or out.stem, on_report=on_report,
            checkpoint=args.checkpoint, resume=args.resume,
        )
    finally:
        bar.close()
    # Absolute paths are cut to their last two parts: the file travels, the machine does not.
    model.config.provenance["command"] = "napari-unet " + " ".join(
        file_name(a, parts=2) if os.path.isabs(a) else a for a in args.argv)
    path = model.save(out, half=args.half, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in model.config.provenance.items()
                      if k not in ("train_config", "val_images")}, indent=1))
    print(f"model saved -> {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    bar = _Bar("evaluate")
    try:
        result = evaluate(model, args.data, limit=args.limit, invert_masks=args.invert_masks,
                          progress=bar, device=args.device, fast=not args.no_fast,
                          rgb=args.rgb, tta=args.tta, object_size=args.object_size,
                          voxel_size=args.voxel_size)
    finally:
        bar.close()
    if model.config.task == "instance":
        print(f"{result.summary['n_images']} images, {result.summary['n_true']} true objects, "
              f"{result.summary['n_pred']} predicted; mean foreground IoU "
              f"{result.summary['mean_foreground_iou']:.3f}")
        print("IoU   accuracy  F1     precision recall")
        for row in result.summary["per_threshold"]:
            print(f"{row['threshold']:.2f}  {row['accuracy']:.3f}     {row['f1']:.3f}  "
                  f"{row['precision']:.3f}     {row['recall']:.3f}")
    else:
        print(json.dumps(result.summary, indent=1))
    if args.csv:
        print(f"per-image scores -> {result.write_csv(args.csv, overwrite=args.overwrite)}")
    return 0


def cmd_fine_tune(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    if not args.out and not args.save_as:
        raise OutputWriteError("say where the tuned model goes: --out FILE.safetensors or --save-as NAME")
    targets = [model_path(args.out)] if args.out else []
    if args.save_as:
        targets.append(user_dir() / f"{args.save_as}{SUFFIX}")
    for target in targets:
        if target.exists() and not args.overwrite:
            raise OutputWriteError(f"{target} exists; pass --overwrite or choose another name")
    image = read_image(args.image)
    labels = read_labels(args.labels)
    mask = read_labels(args.mask) > 0 if args.mask else None
    bar = _permille_bar("fine-tune")

    def on_report(rep) -> None:
        bar.n = int(rep.progress * 1000)
        bar.set_postfix(step=rep.step, loss=f"{rep.loss:.3f}")

    try:
        config = replace(FINE_TUNE_CONFIG, device=args.device, fast=not args.no_fast)
        correction = Correction(image=np.asarray(image.data), labels=labels, mask=mask,
                                axes=args.axes or image.axes, name=Path(args.image).name)
        tuned = fine_tune(model, correction, time_budget=args.time_budget, steps=args.steps,
                          config=config, name=args.save_as, on_report=on_report)
    finally:
        bar.close()
    rnd = tuned.config.provenance["fine_tune_rounds"][-1]
    print(f"fine-tuned {model.name!r} on {rnd['supervised_pixels']} corrected pixels: "
          f"{describe_round(rnd)}")
    data, axes = np.asarray(image.data), args.axes or image.axes
    labels = np.asarray(labels)
    check = check_round([segment(data, model, axes, device=args.device)],
                        [segment(data, tuned, axes, device=args.device)], [labels],
                        [np.ones(labels.shape, bool) if mask is None else mask])
    print(f"check against {model.name!r}: {check.summary()}")
    if not check.accepted:
        if not args.save_refused:
            print(f"not saved: the tuned model is worse on your corrections ({check.reason}); "
                  "correct more objects and run again, or pass --save-refused to keep it anyway",
                  file=sys.stderr)
            return 1
        print(f"saved although the check refused it ({check.reason}), as --save-refused asks")
    if args.save_as:
        print(f"model saved -> {save_user_model(tuned, args.save_as, overwrite=args.overwrite)}")
    if args.out:
        print(f"model saved -> {tuned.save(args.out, overwrite=args.overwrite)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for entry in list_models():
        model = load_model(entry.path)
        net = model.config.network
        kind = "shipped" if entry.shipped else "user"
        print(f"{entry.name:20s} {kind:8s} {model.config.task:9s} in_channels={net.in_channels} "
              f"base={net.base} depth={net.depth}  {entry.path}")
    return 0


def cmd_export_bioimageio(args: argparse.Namespace) -> int:
    path = export_bioimageio(load_model(args.model), args.out, image=args.image, axes=args.axes,
                             overwrite=args.overwrite)
    print(f"bioimage.io package -> {path}")
    return 0


def _add_prediction(p: argparse.ArgumentParser) -> None:
    """Choices of how the network sees an image, shared by segment and evaluate."""
    p.add_argument("--rgb", choices=RGB_MODES, default="auto",
                   help="RGB to gray for 1-channel models: auto (optical density for a light "
                        "background, e.g. H&E or bright-field; the mean otherwise), mean, "
                        "optical-density or hematoxylin")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the four mirror images of each plane "
                        "(4x the network time)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="auto picks CUDA, then Apple MPS, then the CPU (default: auto)")
    p.add_argument("--no-fast", action="store_true",
                   help="disable mixed precision/channels_last (exact fp32; slower)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _add_voxel_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voxel-size", type=_field(SegmentOptions, "voxel_size"), metavar="Z,Y,X",
                   help="voxel size of Z stacks for 3D objects, e.g. 2.18,1,1 (planes 2.18 "
                        "pixels apart); default: the file's calibration, else cubic voxels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment images into label TIFFs")
    p.add_argument("inputs", nargs="+", help="image files (TIFF, OME-TIFF, PNG) or zarr folders")
    p.add_argument("--model", default="nuclei", help="shipped/user model name or .safetensors path")
    p.add_argument("--out", required=True, help="output folder for <name>_labels.tif/.zarr")
    p.add_argument("--axes", help="axes of the input, e.g. YX, CYX, ZYX (default: from the file)")
    p.add_argument("--tile-size", type=_field(SegmentOptions, "tile_size"), help="tile side in pixels (default: the model's)")
    p.add_argument("--overlap", type=_field(SegmentOptions, "tile_overlap"), help="tile overlap in pixels (default: the model's)")
    p.add_argument("--batch-size", type=_field(SegmentOptions, "batch_size"),
                   help="tiles per forward pass (default: 2 on CPU, 8 on CUDA, 4 on MPS)")
    p.add_argument("--seed-threshold", type=_field(SegmentOptions, "seed_threshold"),
                   help="interior probability for seeds")
    p.add_argument("--foreground-threshold", type=_field(SegmentOptions, "foreground_threshold"),
                   help="foreground probability")
    p.add_argument("--min-size", type=_field(SegmentOptions, "min_size"),
                   help="smallest object kept, in pixels")
    p.add_argument("--object-size", type=_field(SegmentOptions, "object_size"),
                   help="object diameter in pixels: the image is resized so objects reach the "
                        "network at the size it learnt (default: the model's; needs a model "
                        "that records its object size)")
    p.add_argument("--stitch-3d", action="store_true",
                   help="build objects in 3D from the probabilities of all Z planes")
    _add_voxel_size(p)
    _add_prediction(p)
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    p.add_argument("--format", choices=FORMATS, default="tiff",
                   help="tiff: <name>_labels.tif; zarr: <name>_labels.zarr (OME-Zarr, written "
                        "block by block). Large inputs go through zarr either way.")
    p.add_argument("--block-size", type=_field(BlockConfig, "block"), default=BlockConfig.block,
                   help="planes larger than this are segmented block by block (bounded memory)")
    p.add_argument("--halo", type=_field(BlockConfig, "halo"), default=BlockConfig.halo,
                   help="pixels around each block for objects crossing its edge "
                        "(>= the largest object radius)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network first (seconds of set-up, then ~1.2x faster: "
                        "for long batches)")
    p.add_argument("--scheduler", type=_option(SCHEDULER),
                   help="run on dask.distributed: 'local' for a LocalCluster, "
                                       "or a scheduler address tcp://host:8786")
    p.add_argument("--workers", type=_option(COUNT), default=2,
                   help="worker processes of a local cluster (default 2)")
    _add_common(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train a model on a folder of images/ and masks/")
    p.add_argument("data", help="folder with images/ and masks/ sub-folders")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--name", help="model name stored in the file (default: file stem)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="network for a new model: default (base 16, fast on a CPU), wide "
                        "(base 32: 4x the compute, for a GPU) or seed (the tutorial's)")
    p.add_argument("--base-model", help="start from this model instead of a fresh network")
    p.add_argument("--task", default="instance", choices=["instance", "semantic"])
    p.add_argument("--class-names", nargs="+", help="semantic class names (e.g. membrane)")
    p.add_argument("--in-channels", type=_field(NetworkConfig, "in_channels"), default=1)
    p.add_argument("--invert-masks", action="store_true",
                   help="mask value 0 is the class (ISBI membrane convention)")
    p.add_argument("--steps", type=_field(TrainConfig, "steps"), default=2000)
    p.add_argument("--time-budget", type=_field(TrainConfig, "time_budget"),
                   help="stop after this many minutes")
    p.add_argument("--batch-size", type=_field(TrainConfig, "batch_size"), default=8)
    p.add_argument("--patch-size", type=_field(TrainConfig, "patch_size"), default=256)
    p.add_argument("--lr", type=_field(TrainConfig, "lr"), default=2e-3)
    p.add_argument("--val-fraction", type=_option(VAL_FRACTION), default=0.05)
    p.add_argument("--val-last", type=_option(VAL_LAST),
                   help="hold out the last N images for validation")
    p.add_argument("--val-every", type=_field(TrainConfig, "val_every"), default=100)
    p.add_argument("--patience", type=_field(TrainConfig, "patience"), default=10,
                   help="validations without gain (0: off)")
    p.add_argument("--seed", type=_field(TrainConfig, "seed"), default=0)
    p.add_argument("--augment", default="standard", choices=sorted(AUGMENTATIONS),
                   help="standard (flips, rotations, elastic, intensity, noise) or robust "
                        "(also inversion, blur and scale: a base model for many modalities)")
    p.add_argument("--checkpoint", help="write the run's state here at every validation, "
                                        "so it can be continued with --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --checkpoint (same command otherwise)")
    p.add_argument("--data-workers", type=_field(TrainConfig, "data_workers"), default=0,
                   help="processes making training patches ahead of the network (a GPU "
                        "needs several; results do not change)")
    p.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model on a folder of images/ and masks/")
    p.add_argument("data", help="folder with images/ and masks/ sub-folders")
    p.add_argument("--model", default="nuclei")
    p.add_argument("--csv", help="write per-image scores to this CSV file")
    p.add_argument("--limit", type=_option(COUNT), help="only the first N images")
    p.add_argument("--invert-masks", action="store_true")
    p.add_argument("--object-size", type=_field(SegmentOptions, "object_size"),
                   help="object diameter in pixels (see segment --object-size)")
    _add_prediction(p)
    _add_voxel_size(p)
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("fine-tune", help="train a copy of a model on corrected labels")
    p.add_argument("image", help="the image that was corrected")
    p.add_argument("labels", help="corrected label TIFF of that image")
    p.add_argument("--mask", help="TIFF marking the pixels that count (default: all)")
    p.add_argument("--model", default="nuclei")
    p.add_argument("--axes", help="axes of the image (default: from the file)")
    p.add_argument("--steps", type=_field(TrainConfig, "steps"), default=FINE_TUNE_CONFIG.steps,
                   help=f"training steps of the round (default {FINE_TUNE_CONFIG.steps})")
    p.add_argument("--time-budget", type=_field(TrainConfig, "time_budget"),
                   default=FINE_TUNE_CONFIG.time_budget,
                   help="time limit in seconds: fewer steps run when they do not fit "
                        f"(default {FINE_TUNE_CONFIG.time_budget:.0f})")
    p.add_argument("--out", help="write the tuned model to this .safetensors file")
    p.add_argument("--save-as", help="save in the user model folder under this name")
    p.add_argument("--save-refused", action="store_true",
                   help="save the tuned model even when it gets fewer of the corrections right "
                        "than the model it started from (refused by default, exit status 1)")
    _add_common(p)
    p.set_defaults(func=cmd_fine_tune)

    p = sub.add_parser("export-bioimageio",
                       help="write a model as a bioimage.io model package (.zip)")
    p.add_argument("model", help="shipped/user model name, .safetensors file or package")
    p.add_argument("out", help="the package to write (.zip appended when missing)")
    p.add_argument("--image", help="image for the test tensors and cover: a file or a bundled "
                                   "sample (default: nuclei_fluo for instance models, "
                                   "em_membrane for semantic ones)")
    p.add_argument("--axes", help="axes of --image, e.g. YX, CYX (default: from the file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=cmd_export_bioimageio)

    p = sub.add_parser("models", help="list shipped and saved models")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for provenance
    keep_freed_memory()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NapariUnetWarning)  # one per file, not per place
            show = warnings.showwarning

            def one_line(message, category, *rest, **kwargs):
                if issubclass(category, NapariUnetWarning):
                    print(f"napari-unet: warning: {message}", file=sys.stderr)
                else:
                    show(message, category, *rest, **kwargs)

            warnings.showwarning = one_line
            return func(args)
    except (Cancelled, KeyboardInterrupt):
        print("napari-unet: interrupted; no partial output was written", file=sys.stderr)
        return 130
    except NapariUnetError as exc:
        print(f"napari-unet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
