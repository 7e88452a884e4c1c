"""Deliver a segmentation to its Labels layer (napari objects, no Qt).

The result goes to the labels layer of the image that launched the job, whatever layer
is active when it ends; re-running updates that layer in place. Edits made since the
previous segmentation are stored in the session first, so no correction is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from napari.layers import Labels

from .._reader import META_KEY
from ..corrections import paste_corrections
from ..io import file_name
from ..postprocess import count_objects, keep_ids
from ..sessions import ModelVersion, SegmentSettings
from ._image import LayerImage, scale_axes, spatial_positions
from ._jobs import SegmentResult, layer_dtype
from ._session import LabelsLink, Session
from ._state import EditTracker


def labels_name(image_layer: Any) -> str:
    return f"{image_layer.name} labels"


def made_by(layer: Any) -> Optional[str]:
    """Which model and settings made napari-unet's labels ``layer`` (e.g. ``"model nuclei,
    min size 20, device cpu"``), read from the layer's metadata, so it holds after a
    session is opened again too; None for labels napari-unet did not make."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    if not isinstance(meta, dict) or meta.get("model") is None:
        return None
    try:
        settings = SegmentSettings.from_dict(dict(meta.get("settings") or {})).summary()
    except (TypeError, ValueError):  # settings of another version: the model still says much
        return f"model {meta['model']}"
    return f"model {meta['model']}, {settings}"


def labels_geometry(image_layer: Any, image: LayerImage) -> dict[str, Any]:
    """Scale, translate and units of the labels: the image layer's, without a channel axis."""
    rgb = getattr(image_layer, "rgb", False)
    keep = spatial_positions(image.axes, rgb)
    if len(scale_axes(image.axes, rgb)) != image_layer.ndim:
        # metadata disagreed with the layer: keep its last dims
        keep = list(range(image_layer.ndim))[-len(image.label_shape):]
    out = {
        "scale": [float(image_layer.scale[i]) for i in keep],
        "translate": [float(image_layer.translate[i]) for i in keep],
    }
    units = getattr(image_layer, "units", None)
    if units is not None:
        out["units"] = [units[i] for i in keep]
    return out


@dataclass
class ApplyReport:
    """What one delivery changed, for the widgets' status lines."""

    labels_layer: Any
    n_objects: int


def _find_labels_layer(viewer: Any, session: Session, image_layer: Any, image: LayerImage):
    shape = tuple(image.label_shape)
    link = session.link_for_image(image_layer)
    if link is not None:
        if link.labels_layer in viewer.layers and tuple(link.labels_layer.data.shape) == shape:
            return link.labels_layer, link
        session.remove_link(link)
    name = labels_name(image_layer)
    for layer in viewer.layers:
        if layer.name == name and isinstance(layer, Labels) and tuple(layer.data.shape) == shape:
            return layer, session.link_for_labels(layer)
    return None, None


def _metadata(layer: Any, image_layer: Any, image: LayerImage, version: ModelVersion,
              settings: SegmentSettings) -> dict:
    provenance = dict(version.model.config.provenance)
    meta = dict(layer.metadata or {})
    meta[META_KEY] = {
        "kind": "labels",
        "axes": image.layout.label_axes,
        "model": version.label,
        "model_name": version.model.name,
        "model_provenance": provenance,
        "settings": settings.to_dict(),
        "source_layer": image_layer.name,
        "source": file_name((image_layer.metadata or {}).get(META_KEY, {}).get("source")),
    }
    return meta


def _with_edits(new: np.ndarray, tracker: EditTracker, current: np.ndarray,
                region: Any = ...) -> np.ndarray:
    """``new`` labels of ``region`` with the user's edits and reviewed labels pasted on top;
    the tracker is rebased on ``new`` and keeps those pixels marked as edited/reviewed (an
    edit the new labels agree with stays an edit: it is still the user's correction)."""
    keep = tracker.mask[region]
    edited_before = tracker.edited[region].copy()
    reviewed = tracker.reviewed[region].copy()
    tracker.rebase(new, region)
    if not keep.any():
        return new
    pasted = paste_corrections(new, current[region], keep)
    pasted = pasted.astype(np.uint32 if new.dtype == np.uint32 else layer_dtype(pasted),
                           copy=False)
    # An edit the new labels already agree with (an erased false object the round no longer
    # draws, an object it now draws with the user's id) differs from nothing, but stays the
    # user's correction: counted as corrected, not as "kept from earlier rounds".
    tracker.edited[region] = (pasted != new) | edited_before
    tracker.reviewed[region] = reviewed
    tracker.revision += 1
    return pasted


def _keep_guidance_inputs(link: LabelsLink, result: SegmentResult, version_index: int) -> None:
    """Keep what "Where to correct" reads from a run: its probabilities (a run of some
    planes updates theirs) and, when another model version made it, the labels the
    previous version had predicted. Call before the tracker is rebased on the result."""
    if link.version is not None and link.version != version_index:
        link.previous = np.array(link.tracker.baseline, copy=True)
    if result.planes is None or link.probabilities is None:
        link.probabilities = result.probabilities
    elif result.probabilities is not None:
        link.probabilities.update(result.probabilities)


def apply_result(viewer: Any, session: Session, image_layer: Any, image: LayerImage,
                 result: SegmentResult, version_index: int,
                 settings: SegmentSettings, keep_edits: bool = False) -> ApplyReport:
    """Write ``result`` into the image's labels layer (creating it on first use).

    What a worker job prepared (labels in the layer's dtype, object count) is used as is, so
    the GUI thread mostly assigns data.
    With ``keep_edits`` (after a fine-tuning round) the user's edits and reviewed labels,
    including those made while the job ran, are pasted over the new labels.
    """
    version = session.versions[version_index]
    layer, link = _find_labels_layer(viewer, session, image_layer, image)
    shape = tuple(image.label_shape)
    new = None
    if result.planes is None:
        new = np.asarray(result.labels)
        if new.dtype not in (np.uint16, np.uint32):  # the worker gives one of these
            new = new.astype(layer_dtype(new))
    created = layer is None
    if created:
        # made with its data: assigning it afterwards would redraw the whole layer twice
        layer = viewer.add_labels(np.zeros(shape, np.uint32) if new is None else new,
                                  name=labels_name(image_layer),
                                  **labels_geometry(image_layer, image))
    if new is not None:
        fresh = link is None
        if fresh:
            # A fresh tracker has nothing supervised: it starts from the new labels.
            link = session.add_link(LabelsLink(image_layer, layer, image, EditTracker(new),
                                               settings))
        _keep_guidance_inputs(link, result, version_index)
        if not fresh:
            tracker = link.current_tracker()
            session.archive(link)
            if keep_edits:
                new = _with_edits(new, tracker, np.asarray(layer.data))
            else:
                tracker.rebase(new)
        data = new
        n_objects = result.n_objects if result.n_objects is not None else count_objects(new)
    else:
        data = layer.data
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint32):
            data = np.asarray(data).astype(np.uint32)
        else:
            data = data.copy()
        if link is None:
            link = session.add_link(LabelsLink(image_layer, layer, image, EditTracker(data),
                                               settings))
        tracker = link.current_tracker()
        _keep_guidance_inputs(link, result, version_index)
        planes = list(result.planes)
        session.archive(link, planes)
        n_objects = 0
        for index in planes:
            plane = np.asarray(result.labels[index])
            if plane.dtype != np.uint32:
                plane = plane.astype(np.int64)
            # the objects it finds keep the ids of those they overlap (3D objects stay
            # whole); new ones get ids unused in the stack
            plane, _ = keep_ids(plane, data[index], int(data.max()) + 1)
            if keep_edits:
                plane = _with_edits(plane, tracker, data, index)
            else:
                tracker.rebase(plane, index)
            data[index] = plane
            if result.n_objects is None:
                n_objects += count_objects(plane)
        if result.n_objects is not None:
            n_objects = result.n_objects
    link.image, link.settings, link.version = image, settings, version_index
    if result.percentiles is not None:  # from the worker: no stack pass on this thread
        link.remember_percentiles(version.model, result.percentiles)
    link.stale = False
    layer.metadata = _metadata(layer, image_layer, image, version, settings)
    if not (created and new is not None):
        layer.data = data
    link.stale = False
    session.corrections_changed.emit(link)
    session.labels_replaced.emit(link)
    return ApplyReport(layer, n_objects)


def current_plane(viewer: Any, image_layer: Any, image: LayerImage) -> tuple[int, ...]:
    """Stack index of the plane in view, in the image's stack axes; () for a 2D image.

    Refuses when the displayed axes are not the image's Y and X (a rolled or 3D view).
    """
    n_stack = len(image.stack_axes)
    if n_stack == 0:
        return ()
    layer_ndim = image_layer.ndim
    displayed = [d - (viewer.dims.ndim - layer_ndim) for d in viewer.dims.displayed]
    own = scale_axes(image.axes, image_layer.rgb)
    yx = [i for i, a in enumerate(own) if a in "YX"]
    if viewer.dims.ndisplay != 2 or sorted(displayed) != sorted(yx):
        raise ValueError(
            "'current plane' needs a 2D view of the image's Y and X axes; switch to 2D "
            "(and reset rolled dimensions) or segment the whole stack"
        )
    point = image_layer.world_to_data(viewer.dims.point)
    index = []
    for i, axis in enumerate(own):
        if axis in "TZ":
            size = image_layer.data.shape[i]
            index.append(int(min(max(round(float(point[i])), 0), size - 1)))
    return tuple(index)


def shapes_mask(shapes_layer: Any, labels_layer: Any,
                plane: tuple[int, ...] = ()) -> np.ndarray:
    """Pixels of ``labels_layer`` inside the shapes (rectangles, polygons) of a Shapes layer.

    Vertices go through world coordinates, so the two layers may have different scales.
    Each shape is filled on the plane of its first vertex; a 2D Shapes layer over a stack
    uses ``plane`` (the plane in view).
    """
    from skimage.draw import polygon

    shape = tuple(labels_layer.data.shape)
    mask = np.zeros(shape, dtype=bool)
    n_lead = len(shape) - 2
    for vertices in shapes_layer.data:
        vertices = np.asarray(vertices, dtype=float)
        world = np.array([shapes_layer.data_to_world(v) for v in vertices])
        coords = np.array([labels_layer.world_to_data(w) for w in world])
        if shapes_layer.ndim >= len(shape):
            lead = [int(round(c)) for c in coords[0, :n_lead]]
        else:
            lead = list(plane) if len(plane) == n_lead else [0] * n_lead
        if any(not 0 <= c < s for c, s in zip(lead, shape[:n_lead])):
            continue
        rr, cc = polygon(coords[:, -2], coords[:, -1], shape[-2:])
        mask[tuple(lead) + (rr, cc)] = True
    return mask
