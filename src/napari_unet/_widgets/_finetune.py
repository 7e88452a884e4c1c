"""The Correct-and-fine-tune dock widget: edit counts, reviewed regions, fine-tuning rounds,
model versions with Revert, Save model as, and the session buttons (:mod:`._session_panel`)."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import numpy as np
from napari.layers import Labels, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..bioimageio import export_bioimageio
from ..errors import NapariUnetError
from ..finetune import FINE_TUNE_CONFIG, describe_round
from ..model import SUFFIX
from ..registry import save_user_model, user_dir
from ..round_check import RoundCheck
from . import _dialogs
from ._jobs import run_fine_tune
from ._layer_combo import LayerCombo
from ._loss_plot import LossPlot
from ._output import apply_result, current_plane, shapes_mask
from ._qt import JobWidget, report_error, scrolled_layout, status_label
from ._round import plan_resegment, run_resegment
from ._session import plane_name
from ._session_panel import SessionPanel


class FineTuneWidget(JobWidget):
    """Teach the model from corrected labels in a few seconds, then re-segment."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_result: Optional[dict] = None
        self._pending_resegment: Optional[int] = None

        self.labels_combo = LayerCombo(self.viewer, self._is_tracked)
        self.counts = QLabel("0 pixels corrected")
        self.counts.setWordWrap(True)
        self.review_button = QPushButton("Mark view as reviewed")
        self.review_button.setToolTip(
            "Declare the labels of the plane in view correct as they are (or only inside the "
            "shapes of the selected Shapes layer), so fine-tuning learns from them too")
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setSingleStep(25)
        self.steps.setValue(FINE_TUNE_CONFIG.steps)
        self.steps.setToolTip("Training steps per round: the same steps teach the same on any "
                              "machine")
        self.time_limit = QDoubleSpinBox()
        self.time_limit.setDecimals(0)
        self.time_limit.setRange(1, 3600)
        self.time_limit.setSingleStep(10)
        self.time_limit.setValue(FINE_TUNE_CONFIG.time_budget or 120)
        self.time_limit.setSuffix(" s")
        self.time_limit.setToolTip("A round on a slow or busy machine runs fewer steps to stay "
                                   "within this time, and says so")
        self.finetune_button = QPushButton("Fine-tune")
        self.loss_label = QLabel("Loss: -")
        self.loss_plot = LossPlot()
        self.status = status_label("Segment an image, correct some objects, then Fine-tune.")
        #: The last round's verdict: stays until the next round (status lines come and go).
        self.report = status_label("")
        self.versions_list = QListWidget()
        self.versions_list.setMaximumHeight(90)
        self.versions_list.setWordWrap(True)
        self.revert_button = QPushButton("Use selected")
        self.revert_button.setToolTip("Make the selected model version active (revert to an "
                                      "earlier one, or use a round that was not made active)")
        self.save_button = QPushButton("Save model as...")
        self.export_button = QPushButton("Export bioimage.io...")
        self.export_button.setToolTip(
            "Write the selected model version as a bioimage.io model package (.zip) that "
            "bioimage.io tools run without napari-unet")
        self._export_worker = None
        self.session_panel = SessionPanel(self, self._session_opened)

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("Steps", self.steps)
        form.addRow("Time limit", self.time_limit)
        layout = scrolled_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.counts)
        layout.addWidget(self.review_button)
        layout.addWidget(self.finetune_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.loss_label)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.status)
        layout.addWidget(self.report)
        layout.addWidget(QLabel("Model versions"))
        layout.addWidget(self.versions_list)
        buttons = QHBoxLayout()
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.export_button)
        layout.addLayout(buttons)
        layout.addWidget(self.session_panel)
        layout.addStretch(1)

        self.jobs.relay.report.connect(self._on_report)
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(150)
        self._count_timer.timeout.connect(self.update_counts)

        self.review_button.clicked.connect(self.mark_reviewed)
        self.finetune_button.clicked.connect(self.fine_tune)
        self.revert_button.clicked.connect(self.revert)
        self.save_button.clicked.connect(self.save_model)
        self.export_button.clicked.connect(self.export_package)
        self.labels_combo.currentIndexChanged.connect(lambda _i: self.update_counts())
        self.viewer.layers.selection.events.active.connect(self._follow_selection)
        self.jobs.listen(self.session.corrections_changed, self._corrections_changed)
        self.jobs.listen(self.session.versions_changed, self.refresh_versions)
        self.jobs.listen(self.session.busy_changed, self._busy_changed)
        self.refresh_versions()
        self.update_counts()

    # ------------------------------------------------------------------ corrections
    def _is_tracked(self, layer: Any) -> bool:
        return self.session.link_for_labels(layer) is not None

    def _corrections_changed(self, link: Any) -> None:
        if link is not None and self.labels_combo.current() is not link.labels_layer:
            self.labels_combo.refresh()
        self._count_timer.start()

    def link(self):
        layer = self.labels_combo.current()
        return None if layer is None else self.session.link_for_labels(layer)

    def _follow_selection(self, event: Any = None) -> None:
        """Selecting napari-unet's labels layer in the layer list selects it here too, so
        the counts and buttons speak of the layer the user is looking at."""
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels) and self.session.link_for_labels(layer) is not None:
            self.labels_combo.select(layer)

    def _target_link(self):
        """The labels an action is for: the selected Labels layer when napari-unet made it
        (whatever the combo held), else the combo's (a Shapes layer may be selected)."""
        self._follow_selection()
        return self.link()

    def update_counts(self) -> None:
        link = self.link()
        stored = self.session.store.n_supervised
        if link is None:
            self.counts.setText("No labels from napari-unet yet: segment an image first.")
            return
        tracker = link.current_tracker()
        text = f"{tracker.n_edited:,} pixels corrected"
        if tracker.n_reviewed:
            text += f", {tracker.n_reviewed:,} reviewed"
        earlier = self._stored_elsewhere(link, tracker) if stored else 0
        if earlier:
            text += f" (and {earlier:,} kept from earlier rounds)"
        self.counts.setText(text)

    def _stored_elsewhere(self, link: Any, tracker: Any) -> int:
        """Stored corrections outside what ``link`` shows as corrected or reviewed now: after
        a round the corrections are pasted back into the layer and counted there."""
        rounds = self.session.store.by_name()
        total = self.session.store.n_supervised
        mask = tracker.mask
        for index in tracker.supervised_planes(link.n_stack):
            for correction in rounds.get(plane_name(link.image_layer.name, index), []):
                total -= int(np.count_nonzero(correction.mask & mask[index]))
        return total

    def mark_reviewed(self) -> int:
        """Mark the plane in view (or the selected Shapes layer's shapes) as reviewed, on the
        selected labels layer (the combo's when a Shapes layer is selected)."""
        link = self._target_link()
        if link is None:
            show_error("segment an image first: there are no labels to review")
            return 0
        try:
            active = self.viewer.layers.selection.active
            if active is not None and isinstance(active, Shapes) and len(active.data):
                plane = ()
                if active.ndim < link.labels_layer.ndim:
                    plane = current_plane(self.viewer, link.image_layer, link.image)
                region = shapes_mask(active, link.labels_layer, plane)
                where = f"the shapes of '{active.name}'"
            else:
                index = current_plane(self.viewer, link.image_layer, link.image)
                region = index if index else ...
                where = f"plane {index}" if index else "the whole image"
        except ValueError as exc:
            show_error(str(exc))
            return 0
        added = link.current_tracker().mark_reviewed(region)
        self.status.setText(f"Marked {where} as reviewed ({added:,} pixels).")
        self.session.corrections_changed.emit(link)
        self.update_counts()
        return added

    # ------------------------------------------------------------------ fine-tuning
    def fine_tune(self) -> bool:
        """Start a fine-tuning round on every correction of the session; False if refused."""
        versions = self.session.versions
        if versions.active is None:
            show_error("segment an image first: there is no model to fine-tune")
            return False
        corrections = self.session.training_set()
        if not corrections:
            show_error("there are no corrections yet: paint or erase some labels, or mark a "
                       "view as reviewed")
            return False
        if not self.session.begin("fine-tuning"):
            show_info(f"napari-unet is busy ({self.session.busy}); wait or cancel it first")
            return False
        parent = versions.active
        # Every round trains the base model of the active version on ALL corrections so far
        # (as Cellpose's human-in-the-loop does): rounds stacked on rounds drifted further
        # from what the base knew with each one (docs/benchmarks.md).
        base = versions[versions.lineage(parent)[0]]
        self._token = self.jobs.new_token()
        self.loss_plot.clear()
        self.loss_label.setText("Loss: starting...")
        n_pixels = sum(c.n_supervised for c in corrections)
        n_planes = len({c.name for c in corrections})
        steps = int(self.steps.value())
        self.status.setText(f"Fine-tuning {base.label} on {n_planes} plane(s), "
                            f"{n_pixels:,} corrected pixels, {steps} steps...")
        self.progress.running(True)
        job = partial(run_fine_tune, base.model, corrections, steps, float(self.time_limit.value()),
                      name=f"{base.model.name}-tuned", on_report=self.jobs.report,
                      cancel=self._token)
        self.worker = self.jobs.start(job, on_returned=partial(self._tuned, parent),
                                      on_error=partial(self._failed, "Fine-tuning"),
                                      on_finished=self._training_finished)
        return True

    def _on_report(self, rep: Any) -> None:
        self.loss_plot.add(rep.loss)
        self.loss_label.setText(f"Loss: {rep.loss:.4f} (step {rep.step} of {rep.total_steps}, "
                                f"{rep.elapsed:.1f} s)")
        self.progress.set_progress(int(rep.progress * 1000), 1000)

    def _tuned(self, parent: int, model: Any) -> None:
        rounds = model.config.provenance.get("fine_tune_rounds", [{}])
        stats = dict(rounds[-1]) if rounds else {}
        if self.loss_plot.values:
            stats["final_loss"] = self.loss_plot.values[-1]
        index = self.session.versions.add_round(model, parent, stats)
        self.session.versions_changed.emit()
        self._pending_resegment = (index, parent)

    def _training_finished(self) -> None:
        pending, self._pending_resegment = self._pending_resegment, None
        if pending is None:
            self.finish_job()
            return
        self.worker = None
        self._token = None
        self._resegment(*pending)

    def _resegment(self, version_index: int, parent: int) -> None:
        """Segment again with the new model what the corrections cover, and compare it with
        the previous version there (in the worker) before anything is shown."""
        plan = plan_resegment(self.session.links, self.viewer.layers)
        if not plan:
            self._round_done(version_index, parent, [], None)
            self.finish_job()
            return
        version = self.session.versions[version_index]
        token = self._token = self.jobs.new_token()
        job = partial(run_resegment, plan, version.model, self.jobs.progress, token)
        self.status.setText(f"Segmenting again with {version.label} and comparing it with "
                            "the previous version...")
        self.worker = self.jobs.start(
            job,
            on_returned=lambda out: self._round_done(
                version_index, parent, list(zip([(p.link, p.planes) for p in plan], out[0])),
                out[1]),
            on_error=partial(self._failed, "Re-segmentation"), on_finished=self.finish_job)

    def _round_done(self, version_index: int, parent: int, results: list,
                    check: Optional[RoundCheck]) -> None:
        versions = self.session.versions
        version = versions[version_index]
        round_text = describe_round(version.stats)
        if check is not None:
            version.stats["check"] = check.to_dict()
        if check is not None and not check.accepted:
            versions.activate(parent)
            self.session.versions_changed.emit()
            text = (f"{version.label} was NOT made active: {check.reason}. "
                    f"{versions[parent].label} stays active and your labels are unchanged; "
                    f"to use the new version anyway, select it under Model versions and press "
                    f"'Use selected'. Round: {round_text}.")
            show_warning(f"{version.label} was not made active: {check.reason}")
            self.report.setText(text)
            self.status.setText("")
            self.last_result = dict(version=version_index, accepted=False, check=check)
            self.refresh_versions()
            return
        closed = []
        for (link, _planes), result in results:
            if (link.labels_layer not in self.viewer.layers
                    or link.image_layer not in self.viewer.layers):
                closed.append(link.labels_layer.name)  # closed while it was re-segmented
                continue
            try:
                apply_result(self.viewer, self.session, link.image_layer, link.image,
                             result, version_index, link.settings, keep_edits=True)
            except (NapariUnetError, ValueError) as exc:
                self._failed("Re-segmentation", exc)
                return
        text = f"{version.label} is active: {round_text}."
        if check is not None:
            text += f" {check.summary().capitalize()}. Your corrections stay."
        if closed:
            note = (f"{', '.join(repr(name) for name in closed)} (or its image) was closed "
                    f"during the round and was not segmented again; press Segment to see "
                    f"{version.label}'s result.")
            show_info(note)
            text += " " + note
        self.report.setText(text)
        self.status.setText("")
        self.last_result = dict(version=version_index, accepted=True, check=check)
        self.refresh_versions()
        self.update_counts()
        self.session_panel.autosave()

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.setText(report_error(exc, what) +
                            (" The previous model stays active." if what == "Fine-tuning" else ""))

    def _busy_changed(self, what: str) -> None:
        idle = not what
        self.finetune_button.setEnabled(idle)
        self.revert_button.setEnabled(idle)

    # ------------------------------------------------------------------ versions
    def refresh_versions(self) -> None:
        versions = self.session.versions
        self.versions_list.clear()
        for i, version in enumerate(versions.versions):
            text = version.label
            check = version.stats.get("check")
            if check:
                text += (f"  (corrected objects right {check['held_after']}/{check['fixes']}, previous "
                         f"{check['held_before']}; {100 * check['changed']:.1f}% changed"
                         f"{'' if check['accepted'] else '; refused'})")
            if version.saved_as:
                text += f"  [saved as {version.saved_as}]"
            if i == versions.active:
                text = "● " + text
            self.versions_list.addItem(text)
        if versions.active is not None:
            self.versions_list.setCurrentRow(versions.active)

    def revert(self) -> bool:
        """Make the selected version active again (Segment and Fine-tune then use it)."""
        row = self.versions_list.currentRow()
        if row < 0 or row >= len(self.session.versions):
            return False
        version = self.session.versions.activate(row)
        self.session.versions_changed.emit()
        self.status.setText(f"Active model: {version.label}. Press Segment to see its result.")
        self.report.setText("")
        return True

    def _selected_version(self, what: str) -> Optional[Any]:
        """The selected (default: active) model version; None, said, when there is none."""
        versions = self.session.versions
        row = self.versions_list.currentRow()
        if not 0 <= row < len(versions):
            row = versions.active if versions.active is not None else -1
        if row < 0:
            show_error(f"there is no model to {what} yet")
            return None
        return versions[row]

    def save_model(self) -> Optional[str]:
        """Save the selected (default: active) version as a user model, listed in Segment."""
        version = self._selected_version("save")
        if version is None:
            return None
        name = _dialogs.ask_model_name(self, version.model.name.replace(" ", "_"))
        if name is None:
            return None
        exists = (user_dir() / f"{name}{SUFFIX}").exists()
        if exists and not _dialogs.confirm_overwrite(self, user_dir() / f"{name}{SUFFIX}"):
            return None
        try:
            model = version.model.copy(name)
            path = save_user_model(model, name, overwrite=exists)
        except NapariUnetError as exc:
            show_error(str(exc))
            return None
        version.saved_as, version.source = name, path
        self.session.versions_changed.emit()
        self.status.setText(f"Saved {version.label} as '{name}' ({path}).")
        show_info(f"Model saved as '{name}'")
        return name

    def export_package(self) -> bool:
        """Export the selected (default: active) version as a bioimage.io package in a
        worker thread (beside the session's job: the version's model is never changed);
        its test tensors and cover come from the bundled sample of the model's kind."""
        if self._export_worker is not None:
            show_info("a bioimage.io export is running; export again when it is done")
            return False
        version = self._selected_version("export")
        if version is None:
            return False
        path = _dialogs.ask_package_path(self, f"{version.model.name.replace(' ', '_')}.zip")
        if path is None:
            return False
        exists = path.exists()
        if exists and not _dialogs.confirm_overwrite(self, path):
            return False
        self.status.setText(f"Exporting {version.label} to {path.name}...")
        self.export_button.setEnabled(False)
        self._export_worker = self.jobs.start(
            partial(export_bioimageio, version.model, path, overwrite=exists),
            on_returned=partial(self._exported, version.label),
            on_error=lambda exc: self.status.setText(report_error(exc, "Exporting")),
            on_finished=self._export_finished, holds_session=False)
        return True

    def _exported(self, label: str, path: Any) -> None:
        self.status.setText(f"Exported {label} as a bioimage.io package: {path}")
        show_info(f"bioimage.io package written to {path}")

    def _export_finished(self) -> None:
        self._export_worker = None
        self.export_button.setEnabled(True)

    # ------------------------------------------------------------------ sessions
    def _session_opened(self) -> None:
        """An opened session is in the viewer: show its first labels layer and versions."""
        link = next(iter(self.session.links), None)
        if link is not None:
            self.labels_combo.select(link.labels_layer)
        self.refresh_versions()
        self.update_counts()
