"""The "Where to correct" dock widget: the model's doubts as a map layer and a ranked list
of places to look, each one click away (the viewer centres on it)."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..guidance import Candidate, ProbabilityStore
from ._jobs import GuideResult, run_guide
from ._layer_combo import LayerCombo
from ._output import current_plane
from ._qt import JobWidget, report_error, status_label

#: The map layer's name, and the name of the rectangle marking the entry clicked.
MAP_NAME = "where to correct"
MARK_NAME = "where to correct: entry"
#: Entries listed (the ranking goes on, but nobody reads a hundred).
SHOWN = 30


def camera(viewer: Any) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 (``viewer.camera``,
    deprecated there, before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class GuideWidget(JobWidget):
    """Rank the objects and regions of a napari-unet labels layer most likely wrong."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(napari_viewer, parent)
        self.candidates: list[Candidate] = []
        self._shown_for: Any = None  # the labels layer the list is about

        self.labels_combo = LayerCombo(self.viewer, self._is_tracked)
        self.show_map = QCheckBox(f"Show the map as a layer ('{MAP_NAME}')")
        self.show_map.setChecked(True)
        self.find_button = QPushButton("Find where to correct")
        self.find_button.setToolTip(
            "Rank the objects most likely wrong from the probabilities of the last Segment "
            "(no extra network pass); objects you corrected or reviewed are left out")
        self.status = status_label("Segment an image, then find where to correct.")
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setToolTip("Click an entry to centre the view on it")

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.show_map)
        layout.addWidget(self.find_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.list, 1)

        self.find_button.clicked.connect(self.find)
        self.list.currentRowChanged.connect(self.go_to)
        self.jobs.listen(self.session.corrections_changed, self._labels_changed)
        self.jobs.listen(self.session.busy_changed, self._busy_changed)

    def _is_tracked(self, layer: Any) -> bool:
        return self.session.link_for_labels(layer) is not None

    def _labels_changed(self, link: Any) -> None:
        """A new labels layer appears in the list as soon as Segment made it."""
        if link is not None and self.labels_combo.current() is not link.labels_layer:
            self.labels_combo.refresh()

    def _busy_changed(self, what: str) -> None:
        self.find_button.setEnabled(not what)

    # ------------------------------------------------------------------ finding
    def _planes(self, link: Any) -> list[tuple[int, ...]]:
        """The planes to rank: every plane with kept probabilities, else the plane in view."""
        store = link.probabilities
        if store is not None and store.planes:
            return store.planes
        return [current_plane(self.viewer, link.image_layer, link.image)]

    def find(self) -> bool:
        """Start ranking the selected labels; False when refused (busy or nothing to rank)."""
        layer = self.labels_combo.current()
        link = None if layer is None else self.session.link_for_labels(layer)
        if link is None:
            show_error("there are no labels from napari-unet here: segment an image first")
            return False
        version = None if link.version is None else self.session.versions[link.version]
        if version is None:
            show_error("the model that made these labels is not in this session: segment again")
            return False
        try:
            planes = self._planes(link)
        except ValueError as exc:
            show_error(str(exc))
            return False
        if not self.session.begin("finding where to correct"):
            show_info(f"napari-unet is busy ({self.session.busy}); wait or cancel it first")
            return False
        store = ProbabilityStore()
        if link.probabilities is not None:
            store.update(link.probabilities)  # the job adds planes it predicts to its copy
        labels = np.array(layer.data, copy=True)  # the user may paint while it runs
        exclude = link.current_tracker().mask.copy()
        # the stack's normalisation, only for planes to predict again (Segment remembered it)
        kept = set(planes) <= set(store.planes)
        percentiles = None if kept else link.stack_percentiles(version.model)
        self._token = self.jobs.new_token()
        job = partial(run_guide, link.image, labels, store, version.model, link.settings,
                      planes, previous=link.previous, exclude=exclude, percentiles=percentiles,
                      progress=self.jobs.progress, cancel=self._token)
        self.status.setText(f"Ranking {layer.name}...")
        self.progress.running(True)
        self.worker = self.jobs.start(job, on_returned=partial(self._show, link),
                                      on_error=self._failed, on_finished=self.finish_job)
        return True

    def _show(self, link: Any, result: GuideResult) -> None:
        """List the candidates and (optionally) show the map over the labels."""
        layer = link.labels_layer
        if layer not in self.viewer.layers:
            self.status.setText(f"'{layer.name}' was closed meanwhile; nothing to show.")
            return
        self.progress.set_progress(1, 1)
        self.candidates = result.candidates
        self._shown_for = layer
        if self.show_map.isChecked():
            self._show_map(layer, result)
        self.list.blockSignals(True)
        self.list.clear()
        stack = bool(link.image.stack_axes)
        for rank, candidate in enumerate(self.candidates[:SHOWN], 1):
            where = f"plane {candidate.plane}: " if stack else ""
            what = f"object {candidate.label}" if candidate.kind == "object" else "region"
            item = QListWidgetItem(f"{rank}. {where}{what}, {candidate.reason} "
                                   f"(score {candidate.score:.2f})")
            self.list.addItem(item)
        self.list.setCurrentRow(-1)
        self.list.blockSignals(False)
        text = (f"{len(self.candidates)} places to check in {layer.name}, most likely wrong "
                f"first" + (f" (the {SHOWN} first listed)" if len(self.candidates) > SHOWN
                            else "") + ". Click one to go there.")
        if result.predicted:
            text += (f" Segment kept no probabilities for {len(result.predicted)} plane(s), so "
                     f"they were predicted again.")
        self.status.setText(text)

    def _show_map(self, labels_layer: Any, result: GuideResult) -> None:
        """The uncertainty map as an Image layer over the labels, same scale and place."""
        shape = tuple(labels_layer.data.shape)
        data = np.zeros(shape, np.float32)
        for index, plane in result.maps.items():
            data[index] = plane
        if MAP_NAME in self.viewer.layers and self.viewer.layers[MAP_NAME].data.shape == shape:
            layer = self.viewer.layers[MAP_NAME]
            layer.data = data
        else:
            if MAP_NAME in self.viewer.layers:
                self.viewer.layers.remove(MAP_NAME)
            layer = self.viewer.add_image(
                data, name=MAP_NAME, colormap="inferno", blending="additive", opacity=0.6,
                contrast_limits=(0.0, 1.0), scale=labels_layer.scale,
                translate=labels_layer.translate)
        layer.metadata = {"napari_unet": {"kind": "where to correct",
                                          "labels": labels_layer.name}}

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(report_error(exc, "Finding where to correct"))

    # ------------------------------------------------------------------ going there
    def go_to(self, row: int) -> None:
        """Centre the viewer on candidate ``row`` (and go to its plane in a stack)."""
        if not 0 <= row < len(self.candidates) or self._shown_for not in self.viewer.layers:
            return
        candidate = self.candidates[row]
        layer = self._shown_for
        world = layer.data_to_world(np.array(candidate.plane + candidate.centre, float))
        point = list(self.viewer.dims.point)
        lead = self.viewer.dims.ndim - layer.ndim  # the viewer's dims before the layer's
        point[lead:] = [float(v) for v in world]
        displayed = list(self.viewer.dims.displayed)
        for axis in range(lead, len(point)):
            if axis not in displayed:
                self.viewer.dims.set_point(axis, point[axis])
        camera(self.viewer).center = tuple(point[axis] for axis in displayed)
        self._mark(layer, candidate)
        end = "" if candidate.reason.endswith("?") else "."
        self.status.setText(f"#{row + 1}: {candidate.reason}{end}")

    def _mark(self, labels_layer: Any, candidate: Candidate) -> None:
        """A rectangle around the entry, so it is plain which object (or region) is meant
        in a dense image; the labels stay the active layer, ready for the brush."""
        y0, x0, y1, x1 = candidate.bbox
        corners = [(y0 - 2, x0 - 2), (y0 - 2, x1 + 1), (y1 + 1, x1 + 1), (y1 + 1, x0 - 2)]
        rectangle = np.array([candidate.plane + corner for corner in corners], float)
        layers = self.viewer.layers
        if MARK_NAME in layers and layers[MARK_NAME].ndim == labels_layer.ndim:
            layers[MARK_NAME].data = [(rectangle, "rectangle")]
        else:
            if MARK_NAME in layers:
                layers.remove(MARK_NAME)
            self.viewer.add_shapes([rectangle], shape_type="rectangle", name=MARK_NAME,
                                   edge_color="yellow", face_color="transparent",
                                   edge_width=2, scale=labels_layer.scale,
                                   translate=labels_layer.translate)
        layers.selection.active = labels_layer
