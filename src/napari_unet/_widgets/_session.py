"""One interactive session per viewer: labels layers made by the plugin, their edit
trackers, stored corrections, model versions and the one job allowed at a time.

Qt-free: napari layers are plain Python objects here, their events are psygnal/napari
events, and the session's own notifications are psygnal signals. The Segment and
Fine-tune widgets of one viewer share its session (no process-wide state).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from psygnal import Signal

from ..guidance import ProbabilityStore
from ..model import Model
from ..segment import prepare_image
from ..sessions import ModelVersion, SegmentSettings
from ._image import LayerImage
from ._state import Correction, CorrectionStore, EditTracker, ModelVersions, merge_corrections


def plane_name(layer_name: str, index: tuple[int, ...]) -> str:
    return layer_name + ("[" + ",".join(map(str, index)) + "]" if index else "")


@dataclass(eq=False)
class LabelsLink:
    """A Labels layer the plugin wrote, with the image it came from and its edit tracker."""

    image_layer: Any
    labels_layer: Any
    image: LayerImage
    tracker: EditTracker
    settings: SegmentSettings
    version: Optional[int] = None
    stale: bool = False
    #: The class probabilities of the planes Segment last predicted, from the same pass
    #: (for "Where to correct"); None when the image was too large to keep them.
    probabilities: Optional[ProbabilityStore] = None
    #: What the previous model version predicted, once another version re-segmented the
    #: layer (for "Where to correct": objects the versions disagree on).
    previous: Optional[np.ndarray] = None
    _callbacks: list = field(default_factory=list)
    _percentiles: dict = field(default_factory=dict)

    @property
    def n_stack(self) -> int:
        return len(self.image.stack_axes)

    def current_tracker(self) -> EditTracker:
        """The tracker, re-diffed against the layer's data if an undo/redo may have happened."""
        if self.stale:
            data = np.asarray(self.labels_layer.data)
            if data.shape == self.tracker.shape:
                self.tracker.refresh(data)
            self.stale = False
        return self.tracker

    @property
    def rgb(self) -> str:
        """The colour conversion the layer was segmented with (corrections learn alike)."""
        return self.settings.rgb

    def _percentile_key(self, model: Model) -> tuple:
        norm = model.config.normalization
        return norm.low, norm.high, model.in_channels, self.rgb

    def remember_percentiles(self, model: Model, percentiles: np.ndarray) -> None:
        """Keep the normalisation a Segment job computed in its worker for ``model``."""
        self._percentiles[self._percentile_key(model)] = percentiles

    def stack_percentiles(self, model: Optional[Model]) -> Optional[np.ndarray]:
        """The whole stack's normalisation for ``model``: what Segment used (remembered
        from its worker), else computed here once; ``None`` for a 2D image or no model."""
        if model is None or not self.n_stack:
            return None
        key = self._percentile_key(model)
        if key not in self._percentiles:
            self._percentiles[key] = prepare_image(self.image.data, model, self.image.axes,
                                                   rgb=self.rgb).percentiles
        return self._percentiles[key]

    def corrections(self, planes: Optional[list[tuple[int, ...]]] = None,
                    model: Optional[Model] = None) -> list[Correction]:
        """Supervised planes of this layer (all, or those in ``planes``) as (C, Y, X)
        corrections for fine-tuning, normalised as a whole-stack Segment with ``model``."""
        tracker = self.current_tracker()
        data = np.asarray(self.labels_layer.data)
        wanted = None if planes is None else {tuple(p) for p in planes}
        out = []
        for index in tracker.supervised_planes(self.n_stack):
            if wanted is not None and index not in wanted:
                continue
            out.append(Correction(
                name=plane_name(self.image_layer.name, index),
                image=self.image.plane_cyx(index),
                labels=np.array(data[index], dtype=np.uint32, copy=True),
                mask=tracker.mask[index].copy(),
                percentiles=self.stack_percentiles(model), rgb=self.rgb,
                axes="CYX",
            ))
        return out


class Session:
    """State shared by the plugin's widgets in one viewer."""

    #: Model versions or the active version changed.
    versions_changed = Signal()
    #: A job started or ended (argument: the job's name, or "" when idle).
    busy_changed = Signal(str)
    #: The edit mask of a labels layer may have changed (argument: the LabelsLink).
    corrections_changed = Signal(object)
    #: A model's result replaced a labels layer's content (a Segment or a fine-tuning
    #: round's re-segmentation; argument: the LabelsLink), so what made it changed.
    labels_replaced = Signal(object)

    def __init__(self) -> None:
        self.versions = ModelVersions()
        self.store = CorrectionStore()
        self.links: list[LabelsLink] = []
        self.busy = ""

    # ------------------------------------------------------------------ jobs
    def begin(self, what: str) -> bool:
        """Claim the session for a job; False when another one runs (the click is refused)."""
        if self.busy:
            return False
        self.busy = what
        self.busy_changed.emit(what)
        return True

    def end(self) -> None:
        self.busy = ""
        self.busy_changed.emit("")

    # ------------------------------------------------------------------ links
    def link_for_labels(self, labels_layer: Any) -> Optional[LabelsLink]:
        for link in self.links:
            if link.labels_layer is labels_layer:
                return link
        return None

    def link_for_image(self, image_layer: Any) -> Optional[LabelsLink]:
        for link in self.links:
            if link.image_layer is image_layer:
                return link
        return None

    def add_link(self, link: LabelsLink) -> LabelsLink:
        """Start tracking edits of ``link.labels_layer`` (paint, data and refresh events)."""
        old = self.link_for_labels(link.labels_layer)
        if old is not None:
            self.remove_link(old)
        self.links.append(link)
        ref = weakref.ref(link)
        events = link.labels_layer.events

        def on_paint(event) -> None:
            link_ = ref()
            if link_ is None:
                return
            atoms = getattr(event, "value", None)
            if atoms is None or not link_.tracker.apply_paint_atoms(atoms):
                link_.stale = True
            self.corrections_changed.emit(link_)

        def on_data(event=None) -> None:
            link_ = ref()
            if link_ is None:
                return
            data = link_.labels_layer.data
            if tuple(data.shape) != link_.tracker.shape:
                # Replaced by something of another shape: start over from it.
                link_.tracker = EditTracker(np.asarray(data))
            link_.stale = True
            self.corrections_changed.emit(link_)

        def on_refresh(event=None) -> None:
            link_ = ref()
            if link_ is not None:
                link_.stale = True  # maybe an undo/redo: re-diff lazily
                self.corrections_changed.emit(link_)

        for emitter, callback in ((events.paint, on_paint), (events.data, on_data),
                                  (events.set_data, on_refresh)):
            emitter.connect(callback)
            link._callbacks.append((emitter, callback))
        return link

    def remove_link(self, link: LabelsLink) -> None:
        for emitter, callback in link._callbacks:
            with suppress(TypeError, ValueError, RuntimeError):  # already gone
                emitter.disconnect(callback)
        link._callbacks.clear()
        if link in self.links:
            self.links.remove(link)

    def forget_layer(self, layer: Any) -> None:
        """A layer left the viewer: stop tracking it (its stored corrections stay)."""
        for link in list(self.links):
            if link.labels_layer is layer or link.image_layer is layer:
                self.archive(link)
                self.remove_link(link)
        self.corrections_changed.emit(None)

    def replace_with(self, versions: Sequence[ModelVersion], active: Optional[int],
                     corrections: Iterable[Correction]) -> None:
        """Stop tracking every layer (the layers stay where they are) and hold only these
        model versions and stored corrections: the start of opening a saved session. The
        caller then links the session's layers (:meth:`add_link`) and emits the signals
        once, for the whole replacement."""
        self.versions.replace(versions, active)
        for link in list(self.links):
            self.remove_link(link)
        self.store.replace(corrections)

    # ------------------------------------------------------------------ corrections
    def archive(self, link: LabelsLink, planes: Optional[list[tuple[int, ...]]] = None) -> int:
        """Keep the supervised planes of ``link`` (all, or only ``planes``) for later rounds."""
        count = 0
        for correction in link.corrections(planes, self.versions.active_model):
            self.store.add(correction)
            count += correction.n_supervised
        return count

    def training_set(self) -> list[Correction]:
        """Stored corrections with the live edits of every tracked layer (newest win)."""
        rounds = self.store.by_name()
        for link in self.links:
            for correction in link.corrections(model=self.versions.active_model):
                rounds[correction.name] = merge_corrections(rounds.get(correction.name, []),
                                                            correction)
        return [c for plane in rounds.values() for c in plane if c.n_supervised]


_KEEP: dict[int, tuple[Any, Session]] = {}


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer itself, not napari's plugin proxy around it.

    napari hands dock widgets a ``PublicOnlyProxy`` that wraps every attribute access in a
    new proxy, so layer identity (``is``) — which is how results find the layer that
    launched them — would not hold. The widgets use public API only.
    """
    return getattr(viewer, "__wrapped__", viewer)


def session_for(viewer: Any) -> Session:
    """The session of ``viewer``, created on first use and dropped with the viewer."""
    viewer = unwrap_viewer(viewer)
    key = id(viewer)
    held = _KEEP.get(key)
    if held is not None and held[0]() is viewer:
        return held[1]
    session = Session()
    try:
        ref = weakref.ref(viewer, lambda _r, key=key: _KEEP.pop(key, None))
    except TypeError:  # pragma: no cover - a viewer that cannot be weakly referenced
        def ref(v: Any = viewer) -> Any:
            return v
    _KEEP[key] = (ref, session)
    layers = getattr(viewer, "layers", None)
    if layers is not None:
        layers.events.removed.connect(lambda event: session.forget_layer(event.value))
    return session
