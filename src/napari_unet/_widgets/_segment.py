"""The Segment dock widget: image + model + settings in, a Labels layer out."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Optional

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QWidget,
)

from .._reader import META_KEY
from .._writer import labels_to_tiff
from ..axes import fitted_channels, make_layout
from ..color import RGB_MODES
from ..config import check_value, rule_of
from ..device import DEVICE_CHOICES
from ..errors import InvalidImageError, NapariUnetError
from ..model import Model
from ..options import SegmentOptions
from ..registry import list_models, load_model
from ..sessions import SegmentSettings
from . import _dialogs
from ._image import layer_axes, layer_image, scale_axes
from ._jobs import SegmentResult, run_segment
from ._layer_combo import LayerCombo
from ._output import apply_result, current_plane, labels_name, made_by
from ._qt import JobWidget, elide_middle, report_error, scrolled_layout, status_label

LOAD_FILE = "Load file..."


def _is_image(layer: Any) -> bool:
    return isinstance(layer, Image)


class SegmentWidget(JobWidget):
    """Segment an image layer with a U-Net; results go to "<image> labels"."""

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(napari_viewer, parent)

        self.image_combo = LayerCombo(self.viewer, _is_image)
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip(
            "Axes of the selected image, from its file or guessed (T, Z, C, Y, X; e.g. ZYX "
            "for a z-stack, CYX for channels). Type others and press Enter to override them")
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Shipped models, your saved models, and this session's "
                                    "fine-tuned versions")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Axes", self.axes_edit)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)

        self.advanced = QToolButton()
        self.advanced.setText("Advanced")
        self.advanced.setCheckable(True)
        self.advanced.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced.setAutoRaise(True)
        self.advanced_box = QWidget()
        adv = QFormLayout(self.advanced_box)
        adv.setContentsMargins(12, 0, 0, 0)
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 4096)
        self.tile_size.setSingleStep(32)
        self.tile_size.setSpecialValueText("default")
        self.tile_size.setToolTip("Tile side in pixels (smaller tiles use less memory)")
        self.seed_threshold = QDoubleSpinBox()
        self.seed_threshold.setDecimals(2)
        self.seed_threshold.setRange(0.0, 0.99)
        self.seed_threshold.setSingleStep(0.05)
        self.seed_threshold.setSpecialValueText("model")
        self.seed_threshold.setToolTip("Interior probability that starts an object; lower finds "
                                       "more objects, higher splits fewer")
        self.min_size = QSpinBox()
        self.min_size.setRange(-1, 1_000_000)
        self.min_size.setSpecialValueText("model")
        self.min_size.setValue(-1)
        self.min_size.setToolTip("Objects smaller than this many pixels are dropped")
        self.object_size = QDoubleSpinBox()
        self.object_size.setDecimals(1)
        self.object_size.setRange(0.0, 1000.0)
        self.object_size.setSingleStep(2.0)
        self.object_size.setSuffix(" px")
        self.object_size.setSpecialValueText("model")
        self.object_size.setToolTip(
            "Typical object diameter in pixels: images are resized so such objects reach the "
            "network at the size it learnt. 'model' uses the model's own (fine-tuning measures "
            "it from your corrected objects)")
        self.rgb = QComboBox()
        self.rgb.addItems(RGB_MODES)
        self.rgb.setToolTip(
            "How an RGB picture becomes gray for a 1-channel model. auto: optical density "
            "when the background is light (H&E, bright-field: dark nuclei turn bright, as "
            "the model learnt them), the mean of R, G and B otherwise")
        self.tta = QCheckBox("Average mirrored predictions (4x slower, steadier)")
        self.tta.setToolTip("Test-time augmentation: the image and its three mirror images "
                            "are predicted and the results averaged")
        self.scope = QComboBox()
        self.scope.addItems(["Whole stack", "Current plane"])
        self.stitch_3d = QCheckBox("Objects in 3D (across Z planes)")
        self.voxel_size = QLineEdit()
        self.voxel_size.setPlaceholderText("the image layer's scale")
        self.voxel_size.setToolTip(
            "Voxel size Z, Y, X of a stack, e.g. 2.18, 1, 1 when planes are 2.18 pixels apart: "
            "3D objects use it, and the image and its labels are shown with it. Empty: the "
            "image layer's scale (from the file's calibration)")
        self.compile = QCheckBox("Compile the network (faster after a few seconds, once)")
        self.compile.setToolTip(
            "torch.compile: the first Segment in this napari session takes a few seconds "
            "longer (up to ~30 s the very first time on this computer), later ones are faster")
        adv.addRow("Tile size", self.tile_size)
        adv.addRow("Seed threshold", self.seed_threshold)
        adv.addRow("Min size", self.min_size)
        adv.addRow("Object size", self.object_size)
        adv.addRow("Colour", self.rgb)
        adv.addRow("Stacks", self.scope)
        adv.addRow(self.stitch_3d)
        adv.addRow("Voxel size Z, Y, X", self.voxel_size)
        adv.addRow(self.tta)
        adv.addRow(self.compile)
        self.advanced.toggled.connect(self._show_advanced)
        self._show_advanced(False)

        self.segment_button = QPushButton("Segment")
        self.status = status_label("Pick an image and a model, then Segment.")
        self.export_button = QPushButton("Export labels...")
        self.export_button.setToolTip("Save the labels of the selected image as a TIFF with "
                                      "pixel size and model provenance")

        layout = scrolled_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.advanced_box)
        layout.addWidget(self.segment_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self.segment_button.clicked.connect(self.segment)
        self.export_button.clicked.connect(self.export)
        self.model_combo.activated.connect(self._model_chosen)
        self.image_combo.currentIndexChanged.connect(self._image_chosen)
        self.axes_edit.editingFinished.connect(lambda: self.set_axes(self.axes_edit.text()))
        self.viewer.layers.events.removed.connect(self.show_selection)
        self.jobs.listen(self.session.versions_changed, self.refresh_models)
        self.jobs.listen(self.session.busy_changed, self._busy_changed)
        # a fine-tuning round re-segments: the status must not go on naming the old model
        self.jobs.listen(self.session.labels_replaced, self.show_selection)
        self.refresh_models()
        self._image_chosen()

    # ------------------------------------------------------------------ image and axes
    def _image_chosen(self, _index: int = -1) -> None:
        self._show_axes()
        self.show_selection()

    def _show_axes(self) -> None:
        layer = self.image_combo.current()
        try:
            axes = "" if layer is None else layer_axes(tuple(layer.data.shape), layer.rgb,
                                                       layer.metadata)
        except InvalidImageError:
            axes = ""
        self.axes_edit.setText(axes)

    def set_axes(self, axes: str) -> bool:
        """Override the axes of the selected image layer (a 3D layer of channels is "CYX",
        one of z-planes "ZYX"); kept in the layer's metadata, where Segment reads them. An
        impossible value is refused with a status line that says why; False then."""
        layer = self.image_combo.current()
        if layer is None:
            return False
        axes = axes.strip().upper()
        try:
            axes = make_layout(layer.data, axes).axes
            if layer.rgb and not axes.endswith("C"):
                raise InvalidImageError(f"a colour (RGB) layer's axes end with C, e.g. YXC, "
                                        f"not {axes}")
        except InvalidImageError as exc:
            self.status.setText(f"Axes of '{elide_middle(layer.name)}' not changed: {exc}")
            self._show_axes()
            return False
        metadata = dict(layer.metadata or {})
        metadata[META_KEY] = {**(metadata.get(META_KEY) or {}), "axes": axes}
        layer.metadata = metadata
        self.axes_edit.setText(axes)
        self.status.setText(f"'{elide_middle(layer.name)}' will be segmented with axes {axes}.")
        return True

    def show_selection(self, event: Any = None) -> None:
        """Status line for the selected image: which model and settings made its labels, or
        what to do. Lines about another image, or about layers since closed, go."""
        if self.running:
            return
        image_layer = self.image_combo.current()
        labels = None if image_layer is None else self._labels_of(image_layer)
        origin = None if labels is None else made_by(labels)
        if image_layer is None:
            text = "Pick an image, then press Segment."
        elif origin is None:
            text = f"'{elide_middle(image_layer.name)}' has no labels yet: press Segment."
        else:
            text = f"'{elide_middle(labels.name)}' was made by {origin}."
        self.status.setText(text)

    # ------------------------------------------------------------------ models
    def _show_advanced(self, on: bool) -> None:
        self.advanced_box.setVisible(on)
        self.advanced.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def refresh_models(self) -> None:
        """List shipped and user models, unsaved session versions, and "Load file..."."""
        versions = self.session.versions
        active = versions.active
        self.model_combo.clear()
        select = None
        seen = set()
        for entry in list_models():
            index = versions.find_source(entry.path)
            label = entry.name + ("" if entry.shipped else " (user)")
            self.model_combo.addItem(label, ("file", entry.path))
            if index is not None:
                seen.add(index)
                if index == active:
                    select = self.model_combo.count() - 1
        for i, version in enumerate(versions.versions):
            if i in seen:
                continue
            suffix = "" if version.source else " (unsaved)"
            self.model_combo.addItem(version.label + suffix, ("version", i))
            if i == active:
                select = self.model_combo.count() - 1
        self.model_combo.addItem(LOAD_FILE, ("load", None))
        if select is not None:
            self.model_combo.setCurrentIndex(select)
        elif self.model_combo.count() > 1:
            names = [self.model_combo.itemText(i) for i in range(self.model_combo.count())]
            self.model_combo.setCurrentIndex(names.index("nuclei") if "nuclei" in names else 0)
        self._show_model_defaults()

    def _show_model_defaults(self) -> None:
        """Show the active model's own post-processing values as the "default" choices."""
        model = self.session.versions.active_model
        if model is None:
            self.seed_threshold.setSpecialValueText("model")
            self.min_size.setSpecialValueText("model")
            self.object_size.setSpecialValueText("model")
            return
        post = model.config.postprocess
        self.seed_threshold.setSpecialValueText(f"model {post.seed_threshold:.2f}")
        self.min_size.setSpecialValueText(f"model {post.min_size}")
        size = model.object_size
        self.object_size.setSpecialValueText("model" if size is None else f"model {size:.1f}")
        self.object_size.setEnabled(size is not None)

    def _model_chosen(self, row: int) -> None:
        kind, value = self.model_combo.itemData(row) or (None, None)
        if kind == "load":
            path = _dialogs.ask_model_file(self)
            if path is None:
                self.refresh_models()
                return
            self.load_model_file(path)
        elif kind == "version":
            self.session.versions.activate(value)
            self.session.versions_changed.emit()

    def load_model_file(self, path: Path) -> Optional[int]:
        """Load a .safetensors model, or a bioimage.io package napari-unet exported, into
        the session and select it."""
        try:
            model = load_model(path)
        except NapariUnetError as exc:
            show_error(str(exc))
            self.refresh_models()
            return None
        index = self.session.versions.add_base(model, source=Path(path), label=model.name)
        self.session.versions_changed.emit()
        return index

    def add_model(self, model: Model, label: Optional[str] = None) -> int:
        """Make an in-memory model available and active (for scripts and tests)."""
        index = self.session.versions.add_base(model, label=label or model.name)
        self.session.versions_changed.emit()
        return index

    def _selected_version(self) -> int | Path:
        """The selected model as a session version, or the path of a model file not loaded
        yet (the segmentation job loads it in its worker, off the GUI thread)."""
        kind, value = self.model_combo.currentData() or (None, None)
        versions = self.session.versions
        if kind == "version":
            return int(value)
        if kind == "file":
            index = versions.find_source(Path(value))
            return Path(value) if index is None else index
        raise NapariUnetError("no model is selected: choose a model or 'Load file...' first")

    def _add_loaded(self, path: Path, model: Model) -> int:
        """A model the job loaded from ``path`` becomes a session version (once)."""
        versions = self.session.versions
        index = versions.find_source(path)
        if index is None:
            index = versions.add_base(model, source=path, label=model.name, activate=False)
        return index

    # ------------------------------------------------------------------ settings
    def settings(self) -> SegmentSettings:
        return SegmentSettings(
            device=self.device_combo.currentText(),
            tile_size=max(self.tile_size.value(), 32) if self.tile_size.value() else None,
            seed_threshold=self.seed_threshold.value() or None,
            min_size=None if self.min_size.value() < 0 else self.min_size.value(),
            # a model that does not record its object size cannot be set to another one
            object_size=(self.object_size.value() or None) if self.object_size.isEnabled()
            else None,
            scope="plane" if self.scope.currentIndex() == 1 else "stack",
            stitch_3d=self.stitch_3d.isChecked(),
            compile=self.compile.isChecked(),
            rgb=self.rgb.currentText(),
            tta=self.tta.isChecked(),
        )

    def _voxel_size(self, image_layer: Any, image: Any) -> tuple[float, ...]:
        """The voxel size typed in, set as the Z/Y/X scale of the image layer and its
        labels (so napari shows the stack in proportion), or the image layer's scale."""
        own = scale_axes(image.axes, image_layer.rgb)
        text = self.voxel_size.text().strip()
        if not text:
            return tuple(float(image_layer.scale[own.index(a)]) for a in "ZYX")
        rule = rule_of(SegmentOptions, "voxel_size")
        parsed = rule.parse(text.replace(" ", ""))
        check_value("voxel size", parsed, rule)
        sizes = tuple(float(v) for v in parsed)  # type: ignore[union-attr]
        scale = list(image_layer.scale)
        for axis, size in zip("ZYX", sizes):
            scale[own.index(axis)] = size
        image_layer.scale = scale
        link = self.session.link_for_image(image_layer)
        if link is not None and link.labels_layer in self.viewer.layers:
            label_axes = [a for a in own if a != "C"]
            link.labels_layer.scale = [scale[own.index(a)] for a in label_axes]
        return sizes

    # ------------------------------------------------------------------ running
    def segment(self) -> bool:
        """Start segmenting the selected image; False when refused (busy or bad input)."""
        if not self.session.begin("segmentation"):
            show_info(f"napari-unet is busy ({self.session.busy}); wait or cancel it first")
            return False
        try:
            image_layer = self.image_combo.current()
            if image_layer is None:
                raise NapariUnetError("there is no image layer: open an image or a sample first")
            selected = self._selected_version()
            image = layer_image(image_layer.data, image_layer.rgb, image_layer.metadata)
            settings = self.settings()
            if "Z" in image.stack_axes:
                settings = replace(settings, voxel_size=self._voxel_size(image_layer, image))
            if isinstance(selected, Path):
                # Loaded (and checked against the image) in the worker.
                version_index, model, label = None, selected, selected.stem
                n_channels = image.layout.n_channels
            else:
                version_index = selected
                model = self.session.versions[version_index].model
                label = self.session.versions[version_index].label
                n_channels = None
                model.check_channels(fitted_channels(image.layout.n_channels,
                                                     model.in_channels))
                self.session.versions.activate(version_index)
            planes = None
            if settings.scope == "plane" and image.stack_axes:
                planes = [current_plane(self.viewer, image_layer, image)]
            link = self.session.link_for_image(image_layer)
            labels_layer = None if link is None else link.labels_layer
        except (NapariUnetError, ValueError) as exc:
            self.session.end()
            show_error(str(exc))
            self.status.setText(str(exc))
            return False
        if version_index is not None:
            self.session.versions_changed.emit()
        self._token = self.jobs.new_token()
        job = partial(_segment_job, image, model, settings, planes,
                      progress=self.jobs.progress, cancel=self._token, n_channels=n_channels)
        where = f"plane {planes[0]}" if planes else "all planes" if image.stack_axes else ""
        self.status.setText(f"Segmenting '{elide_middle(image_layer.name)}' {where} with "
                            f"{label}...")
        self.progress.running(True)
        self.worker = self.jobs.start(
            job,
            on_returned=partial(self._deliver, image_layer, labels_layer, image, version_index,
                                settings),
            on_error=self._failed, on_finished=self.finish_job,
        )
        return True

    def _deliver(self, image_layer: Any, labels_layer: Optional[Any], image,
                 version_index: Optional[int], settings: SegmentSettings,
                 result: SegmentResult) -> None:
        """Write the result into the image's labels. If the image was closed meanwhile
        the result is dropped; if only its labels were, they come back as a new layer."""
        if result.model is not None and result.source is not None:
            version_index = self._add_loaded(result.source, result.model)
        if version_index is not None and result.model is not None:
            self.session.versions.activate(version_index)
            self.session.versions_changed.emit()
        if image_layer not in self.viewer.layers:
            text = f"'{image_layer.name}' was closed while it was segmented; result dropped."
            show_info(text)
            self.status.setText(text)
            return
        try:
            report = apply_result(self.viewer, self.session, image_layer, image, result,
                                  version_index, settings)
        except (NapariUnetError, ValueError) as exc:
            self._failed(exc)
            return
        self.progress.set_progress(1, 1)
        colour = ("" if result.conversion is None
                  else f" The model saw the {result.conversion.describe()}.")
        text = (f"{report.n_objects} objects in '{elide_middle(report.labels_layer.name)}', "
                f"made by {made_by(report.labels_layer)}.{colour} Correct them with the "
                "brush/eraser, then fine-tune.")
        if labels_layer is not None and labels_layer not in self.viewer.layers:
            closed = (f"'{labels_layer.name}' was closed while it was segmented again; the "
                      f"result is in a new layer, '{report.labels_layer.name}'.")
            show_info(closed)
            text = closed + " " + text
        self.status.setText(text)

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(report_error(exc, "Segmentation"))

    def _busy_changed(self, what: str) -> None:
        self.segment_button.setEnabled(not what)

    # ------------------------------------------------------------------ export
    def _labels_of(self, image_layer: Any) -> Optional[Any]:
        """The labels of ``image_layer`` in the viewer: its linked layer, else by name."""
        link = self.session.link_for_image(image_layer)
        if link is not None and link.labels_layer in self.viewer.layers:
            return link.labels_layer
        name = labels_name(image_layer)
        if name in self.viewer.layers:  # a LayerList has no .get
            return self.viewer.layers[name]
        return None

    def labels_layer(self) -> Optional[Any]:
        """The labels of the selected image, else the active Labels layer."""
        image_layer = self.image_combo.current()
        labels = None if image_layer is None else self._labels_of(image_layer)
        if labels is not None:
            return labels
        active = self.viewer.layers.selection.active
        return active if active is not None and isinstance(active, Labels) else None

    def export(self) -> Optional[Path]:
        """Ask for a path (and before replacing a file), then write the labels TIFF."""
        layer = self.labels_layer()
        if layer is None:
            show_error("there are no labels to export: segment an image first")
            return None
        path = _dialogs.ask_save_path(self, f"{layer.name.replace(' ', '_')}.tif")
        if path is None:
            return None
        if path.exists() and not _dialogs.confirm_overwrite(self, path):
            self.status.setText(f"Not exported: {path.name} was kept.")
            return None
        try:
            written = labels_to_tiff(path, layer.data, scale=layer.scale, units=layer.units,
                                     metadata=layer.metadata, overwrite=True)
        except (NapariUnetError, ValueError, OSError) as exc:
            show_error(f"Export failed: {exc}")
            self.status.setText(f"Export failed: {exc}")
            return None
        self.status.setText(f"Exported {layer.name} to {written}.")
        show_info(f"Labels saved to {written}")
        return written


def _segment_job(image, model, settings: SegmentSettings, planes, *, progress, cancel,
                 n_channels) -> SegmentResult:
    """The Segment button's worker job: loads the model first when given its file."""
    source = None if isinstance(model, Model) else Path(model)
    if source is not None:
        model = load_model(source)
        model.check_channels(fitted_channels(n_channels, model.in_channels))
    result = run_segment(image, model, settings, planes, progress=progress, cancel=cancel)
    if source is not None:
        result.model, result.source = model, source
    return result
