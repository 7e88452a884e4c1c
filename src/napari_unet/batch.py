"""Segment files in batches: in memory, out of core, or on a dask.distributed cluster.

One file is segmented in memory when its labels fit comfortably; a lazily read image
(over 1 GiB) or labels over 1 GiB go through a zarr store written block by block, then
(for TIFF output) are streamed into a tiled OME BigTIFF, so memory stays bounded by a
block. With a scheduler, files become tasks on dask.distributed workers; a single stack
is split into groups of planes instead (normalised with percentiles computed once, ids
made unique afterwards, 3D stitching on the client). The CLI's ``segment`` is a thin shell.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._version import __version__
from .axes import Layout, make_layout
from .blocks import block_boxes
from .config import COUNT, Pattern, check_value
from .device import torch_threads
from .errors import NapariUnetError, OutputWriteError
from .io import (
    ImageData,
    atomic_folder,
    create_labels,
    file_name,
    image_stem,
    is_zarr,
    read_image,
    write_labels,
)
from .io.atomic import PathLike
from .io.tiff import LAZY_THRESHOLD_BYTES
from .model import Model
from .options import SegmentOptions
from .overlay import write_overlay
from .postprocess import count_objects
from .progress import CancelToken, ProgressCallback
from .registry import load_model
from .segment import prepare_image, segment, stitch_along_z
from .volume import file_voxel_size, warn_plane_by_plane

FORMATS = ("tiff", "zarr")
#: "local", or a dask.distributed scheduler address: [scheme://]host:port.
SCHEDULER = Pattern(r"local|(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}",
                    "'local' or a scheduler address such as tcp://host:8786")
_SUFFIX = {"tiff": "_labels.tif", "zarr": "_labels.zarr"}


@dataclass(frozen=True)
class FileResult:
    """What one file gave: the labels written, the object (or class) count and how."""

    source: str
    labels: Path
    n_objects: int
    out_of_core: bool
    seconds: float
    overlay: Optional[Path] = None
    error: Optional[str] = None


def output_paths(sources: Sequence[PathLike], out_dir: PathLike, fmt: str = "tiff",
                 overwrite: bool = False, overlay: bool = False
                 ) -> list[tuple[Path, Optional[Path]]]:
    """(labels, overlay) paths per source, checked before any work so a batch never
    stops halfway on a name clash or an existing file, and never replaces one of its own
    inputs (``segment d/*.tif --out d --overwrite``), a folder with a file output or a
    folder that is not a zarr store with a zarr output."""
    if fmt not in FORMATS:
        raise OutputWriteError(f"unknown output format {fmt!r}; use one of {FORMATS}")
    inputs = [_identity(s) for s in sources]
    resolved = [Path(s).resolve() for s in sources]
    out, seen = [], set()
    for source in sources:
        stem = image_stem(source)
        labels = Path(out_dir) / f"{stem}{_SUFFIX[fmt]}"
        preview = Path(out_dir) / f"{stem}_overlay.png" if overlay else None
        if labels in seen:
            raise OutputWriteError(
                f"two inputs would both write {labels.name}; rename one of them or segment "
                f"them into different output folders"
            )
        seen.add(labels)
        for target in (labels, preview):
            if target is None or not os.path.lexists(target):
                continue
            if _identity(target) in inputs or (target.is_dir() and any(
                    target.resolve() in r.parents for r in resolved)):
                raise OutputWriteError(
                    f"{target} is one of the inputs (or holds one) and would be replaced "
                    "by an output of the same name; inputs are never replaced, even with "
                    "--overwrite: choose another --out"
                )
            if not overwrite:
                raise OutputWriteError(f"{target} exists; pass --overwrite or choose another --out")
            _check_replaceable(target, folder=target == labels and fmt == "zarr")
        out.append((labels, preview))
    return out


def _identity(path: PathLike) -> Any:
    """What a path is on disk: (device, inode) when it exists (links and other spellings
    of the same file compare equal), else its resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return Path(path).resolve()


def _check_replaceable(target: Path, folder: bool) -> None:
    """With --overwrite, an existing output is replaced only by its own kind: a file by a
    file, a zarr store by a zarr store (a user's ordinary folder never)."""
    if not folder and target.is_dir():
        raise OutputWriteError(f"{target} is a folder; --overwrite replaces only a file there: "
                               "move the folder away or choose another --out")
    if folder and not target.is_dir():
        raise OutputWriteError(f"{target} is a file; a zarr output is a folder: move the file "
                               "away or choose another --out")
    if folder and not is_zarr(target):
        raise OutputWriteError(f"{target} is a folder but not a zarr store; --overwrite "
                               "replaces only an earlier zarr result, never another folder: "
                               "move it away or choose another --out")


def needs_out_of_core(image: ImageData, layout: Layout) -> bool:
    """Lazily read images, and labels that would take over 1 GiB, go through zarr."""
    label_bytes = 4 * int(np.prod(layout.label_shape, dtype=np.int64))
    return not isinstance(image.data, np.ndarray) or label_bytes > LAZY_THRESHOLD_BYTES


def segment_file(
    source: PathLike,
    target: PathLike,
    model: Model,
    options: SegmentOptions = SegmentOptions(),
    *,
    axes: Optional[str] = None,
    fmt: str = "tiff",
    overwrite: bool = False,
    overlay: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> FileResult:
    """Segment one image file into a label TIFF or OME-Zarr at ``target`` (atomically),
    out of core when the image or its labels are large (see the module docstring);
    ``axes`` (default: the file's) name the image's axes."""
    start = time.perf_counter()
    image = read_image(source)
    layout = make_layout(image.data, axes or image.axes, model.in_channels)
    meta = _provenance(model, source, options)
    kwargs: dict[str, Any] = dict(axes=layout.axes, options=file_voxel_size(options, image, layout),
                                  progress=progress, cancel=cancel)
    pixel_size, unit = label_calibration(image, layout, options)
    out_of_core = fmt == "zarr" or needs_out_of_core(image, layout)
    target = Path(target)
    with _label_store(target, fmt, overwrite, out_of_core) as store:
        if store is None:
            labels = segment(image.data, model, **kwargs)
        else:
            labels = create_labels(store, layout.label_shape, layout.label_axes,
                                   pixel_size=pixel_size, unit=unit, metadata=meta)
            segment(image.data, model, out=labels, **kwargs)
        if fmt == "tiff":
            write_labels(target, labels, axes=layout.label_axes, pixel_size=pixel_size,
                         unit=unit, metadata=meta, overwrite=overwrite)
        n = count_objects(labels)
        preview = None
        if overlay is not None:
            plane, plane_labels = preview_plane(image.data, layout.axes, labels)
            preview = write_overlay(overlay, plane, plane_labels, overwrite)
    return FileResult(str(source), target, n, out_of_core, time.perf_counter() - start, preview)


@contextmanager
def _label_store(target: Path, fmt: str, overwrite: bool, out_of_core: bool
                 ) -> Iterator[Optional[Path]]:
    """Where labels go while segmenting: ``None`` (memory), the zarr output itself
    (renamed into place on success) or a scratch zarr beside a TIFF output (deleted)."""
    if fmt == "zarr":
        with atomic_folder(target, overwrite=overwrite) as tmp:
            yield tmp
    elif out_of_core:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.TemporaryDirectory(dir=target.parent, prefix=".napari-unet-scratch-")
        except OSError as exc:
            raise OutputWriteError(
                f"could not create a scratch folder in {str(target.parent)!r}: {exc}; "
                "choose a writable output folder with free space"
            ) from exc
        with scratch as folder:
            yield Path(folder) / "labels.zarr"
    else:
        yield None


def _provenance(model: Model, source: PathLike, options: SegmentOptions) -> dict[str, Any]:
    """What the labels file records: model, settings, input file (its name: no folder of
    this machine) and package version."""
    return {"kind": "labels", "software": "napari-unet", "model": model.name,
            "settings": asdict(options), "source": file_name(source),
            "napari_unet": __version__}


def label_calibration(image: ImageData, layout: Layout, options: SegmentOptions
                      ) -> tuple[Optional[tuple[float, ...]], Optional[str]]:
    """Pixel size of the labels' Z/Y/X axes and its unit: the input's when it has one per
    axis, else the ``voxel_size`` the options give for a Z stack, as a ratio (unit
    ``"pixel"``), so the labels open in napari and Fiji with the stack's proportions."""
    spatial = [a for a in layout.axes if a in "ZYX"]
    if image.pixel_size is not None and len(image.pixel_size) == len(spatial):
        return tuple(s for a, s in zip(spatial, image.pixel_size)
                     if a in layout.label_axes), image.unit
    if options.voxel_size is not None and "Z" in layout.label_axes:
        sizes = dict(zip("ZYX", options.voxel_size))
        return tuple(sizes[a] for a in layout.label_axes if a in sizes), "pixel"
    return None, image.unit


def preview_plane(image: Any, axes: str, labels: Any, side: int = 2048
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The middle plane of a stack (first channel) and its labels for the PNG overlay,
    read alone and with a stride so that neither a lazy stack nor a huge plane is loaded
    whole (at most ``side`` pixels along Y and X)."""
    step = max(1, -(-max(labels.shape[-2:]) // side))
    yx = slice(None, None, step)
    index = tuple(yx if a in "YX" else (0 if a == "C" else n // 2)
                  for a, n in zip(axes, image.shape))
    label_index = tuple(n // 2 for n in labels.shape[:-2]) + (yx, yx)
    return np.asarray(image[index]), np.asarray(labels[label_index])


# --------------------------------------------------------------------------- batches


def segment_files(
    sources: Sequence[PathLike],
    out_dir: PathLike,
    model: Union[str, Path],
    options: SegmentOptions = SegmentOptions(),
    *,
    axes: Optional[str] = None,
    fmt: str = "tiff",
    overwrite: bool = False,
    overlay: bool = False,
    scheduler: Optional[str] = None,
    workers: int = 2,
    threads: Optional[int] = None,
    on_result: Optional[Callable[[FileResult], None]] = None,
    progress_for: Optional[Callable[[str], ProgressCallback]] = None,
) -> list[FileResult]:
    """Segment every source into ``out_dir``; one file's failure does not stop the others
    (its :attr:`FileResult.error` says why). ``model`` is a shipped/user model name or a
    file path, which workers must be able to open too.

    ``axes`` (default: each file's own) name the images' axes. ``scheduler=None`` runs
    here, one file after another; ``"local"`` starts a dask.distributed LocalCluster of
    ``workers`` processes; any other value is the address of a running scheduler
    (``tcp://host:8786``) whose workers see the same files; anything else raises
    :class:`~napari_unet.errors.InvalidSettingError` before any work. ``threads`` are the
    torch threads per task on a cluster (``None``: the machine's cores / workers).
    """
    if scheduler is not None:
        check_value("scheduler", scheduler, SCHEDULER)
    if threads is not None:
        check_value("threads", threads, COUNT)
    targets = output_paths(sources, out_dir, fmt, overwrite, overlay)
    loaded = load_model(model)
    if options.object_size is not None:  # refused once, before any file, if it cannot work
        loaded.for_object_size(options.object_size)
    if scheduler is None:
        results = []
        for source, (labels, preview) in zip(sources, targets):
            progress = progress_for(str(source)) if progress_for else None
            result = _guarded(segment_file, source, labels, loaded, options, axes=axes, fmt=fmt,
                              overwrite=overwrite, overlay=preview, progress=progress)
            if on_result:
                on_result(result)
            results.append(result)
        return results
    job = _Job(str(model), options, axes, threads, fmt, overwrite)
    with cluster(scheduler, workers) as client:
        if len(sources) == 1:
            image = read_image(sources[0])
            prepared = prepare_image(image.data, loaded, axes or image.axes)
            if int(np.prod(prepared.layout.stack_shape, dtype=np.int64)) > 1:
                return [_segment_volume(client, job, sources[0], image, prepared, targets[0],
                                        loaded, on_result)]
        return _segment_many(client, job, sources, targets, on_result)


def _guarded(fn: Callable[..., FileResult], source: PathLike, target: Path, *args: Any,
             **kwargs: Any) -> FileResult:
    """Run one file's job; the package's own errors become a result with an error."""
    start = time.perf_counter()
    try:
        return fn(source, target, *args, **kwargs)
    except NapariUnetError as exc:
        return FileResult(str(source), target, 0, False, time.perf_counter() - start,
                          error=str(exc))


@contextmanager
def cluster(scheduler: str, workers: int = 2, timeout: str = "10s") -> Iterator[Any]:
    """A dask.distributed client: a new LocalCluster for ``"local"``, else a connection
    (given up after ``timeout``)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise NapariUnetError(
            "dask.distributed is not installed; pip install 'napari-unet[distributed]'"
        ) from None
    if scheduler == "local":
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, env={"OMP_NUM_THREADS": str(threads)}
                          ) as local, Client(local) as client:
            yield client
    else:
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as exc:
            raise NapariUnetError(
                f"could not reach the dask scheduler at {scheduler!r} ({exc}); check the "
                "address (tcp://host:8786) and that the scheduler is running"
            ) from None
        with client:
            yield client


@dataclass(frozen=True)
class _Job:
    """What every task of a batch on a cluster shares (one value, so it pickles): the
    model's name or path (each worker opens it), how to segment and how to write."""

    model: str
    options: SegmentOptions
    axes: Optional[str]
    threads: Optional[int]
    fmt: str
    overwrite: bool

    @property
    def worker_threads(self) -> int:
        return self.threads or int(os.environ.get("OMP_NUM_THREADS", 0) or 1)


def _remote_file(job: _Job, source: str, target: tuple[Path, Optional[Path]]) -> FileResult:
    """One file on a worker (a module-level function, so it pickles)."""
    with torch_threads(job.worker_threads):
        return _guarded(segment_file, source, target[0], load_model(job.model), job.options,
                        axes=job.axes, fmt=job.fmt, overwrite=job.overwrite, overlay=target[1])


def _segment_many(client: Any, job: _Job, sources: Sequence[PathLike], targets: list,
                  on_result: Optional[Callable[[FileResult], None]]) -> list[FileResult]:
    from dask.distributed import as_completed

    futures = [client.submit(_remote_file, job, str(s), t, pure=False)
               for s, t in zip(sources, targets)]
    order = {f.key: i for i, f in enumerate(futures)}
    results: list[Optional[FileResult]] = [None] * len(futures)
    for future in as_completed(futures):
        result = future.result()
        results[order[future.key]] = result
        if on_result:
            on_result(result)
    return [r for r in results if r is not None]


def _remote_planes(job: _Job, source: str, store: str, planes: list[tuple[int, ...]],
                   percentiles: np.ndarray) -> int:
    """Segment some planes of one stack into the shared zarr; returns their largest id.
    Never stitched here: the client stitches the whole stack once ids are unique."""
    import zarr

    image = read_image(source)
    out = zarr.open_array(store, mode="r+")
    with torch_threads(job.worker_threads):
        segment(image.data, load_model(job.model), job.axes or image.axes, job.options,
                planes=planes, percentiles=percentiles, out=out, stitch_3d=False)
    return max(int(np.asarray(out[p + box]).max()) for p in planes
               for box in block_boxes(out.shape[-2:], 4096))


def _remote_shift(store: str, planes: list[tuple[int, ...]], offset: int) -> None:
    """Add ``offset`` to the non-zero ids of some planes (ids unique across tasks)."""
    import zarr

    out = zarr.open_array(store, mode="r+")
    for p in planes:
        for box in block_boxes(out.shape[-2:], 4096):
            block = np.asarray(out[p + box])
            out[p + box] = np.where(block > 0, block + np.uint32(offset), 0)


def _segment_volume(client: Any, job: _Job, source: PathLike, image: ImageData, prepared: Any,
                    target: tuple, loaded: Model,
                    on_result: Optional[Callable[[FileResult], None]]) -> FileResult:
    """One stack (already read and prepared here, once) split into plane groups over the
    cluster's workers, which open the file and ``model`` themselves."""
    start = time.perf_counter()
    layout = prepared.layout
    indices = list(np.ndindex(*layout.stack_shape))
    n_tasks = min(len(indices), 4 * max(1, len(client.scheduler_info()["workers"])))
    split: list[np.ndarray] = np.array_split(np.array(indices), n_tasks)
    groups = [[tuple(int(i) for i in p) for p in g] for g in split if len(g)]
    labels_path, overlay = target
    pixel_size, unit = label_calibration(image, layout, job.options)
    with _label_store(labels_path, job.fmt, job.overwrite, True) as store:
        assert store is not None  # out of core: always a zarr store
        labels = create_labels(store, layout.label_shape, layout.label_axes, pixel_size=pixel_size,
                               unit=unit, metadata=_provenance(loaded, source, job.options))
        path = str(store / "0")
        tops = client.gather([client.submit(_remote_planes, job, str(source), path, g,
                                            prepared.percentiles, pure=False) for g in groups])
        if loaded.config.task == "instance":
            offsets = np.concatenate([[0], np.cumsum(tops)[:-1]])
            client.gather([client.submit(_remote_shift, path, g, int(o), pure=False)
                           for g, o in zip(groups, offsets) if o])
            if job.options.stitch_3d and "Z" in layout.stack_axes:
                warn_plane_by_plane("its planes were segmented by separate workers")
                stitch_along_z(labels, layout)
        if job.fmt == "tiff":
            write_labels(labels_path, labels, axes=layout.label_axes, pixel_size=pixel_size,
                         unit=unit, metadata=_provenance(loaded, source, job.options),
                         overwrite=job.overwrite)
        n = count_objects(labels)
        preview = None
        if overlay is not None:
            plane, plane_labels = preview_plane(image.data, layout.axes, labels)
            preview = write_overlay(overlay, plane, plane_labels, job.overwrite)
    result = FileResult(str(source), labels_path, n, True, time.perf_counter() - start, preview)
    if on_result:
        on_result(result)
    return result
