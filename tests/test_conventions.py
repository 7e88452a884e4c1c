"""The conventions napari users expect (issue "Ecosystem"), driven through real widgets:
a plain few-plane TIFF opens as channels and the Segment widget overrides axes; File >
Save Selected Layers keeps calibration and the smallest integer type; the Segment status
names the model and settings of the selected image's labels, drops stale lines and elides
long names in the middle; "Mark view as reviewed" acts on the selected labels layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import napari_unet
from napari_unet._package import PLUGIN
from napari_unet.io import read_image
from napari_unet.sample_data import load_sample


@pytest.fixture
def ui(make_napari_viewer, tiny_model, tmp_path, monkeypatch):
    """A viewer with the Segment and Fine-tune widgets and the tiny model selected."""
    from napari_unet._widgets._finetune import FineTuneWidget
    from napari_unet._widgets._segment import SegmentWidget

    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))
    viewer = make_napari_viewer()
    seg, fine = SegmentWidget(viewer), FineTuneWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    viewer.window.add_dock_widget(fine, name="Fine-tune")
    seg.add_model(tiny_model, label="tiny")
    return viewer, seg, fine


@pytest.fixture
def crop():
    return np.asarray(load_sample("nuclei_fluo").data)[:64, :64]


def segmented(qtbot, viewer, seg, image, name, **kwargs):
    """Add ``image`` as layer ``name``, segment it, and return its labels layer."""
    layer = viewer.add_image(image, name=name, **kwargs)
    seg.image_combo.select(layer)
    assert seg.segment()
    qtbot.waitUntil(lambda: not seg.running and not seg.session.busy, timeout=30_000)
    return viewer.layers[f"{name} labels"]


def _plain_tiff(path, planes):
    """Pages of gray planes, no axes, no metadata (as many exporters write a CYX image)."""
    tifffile.imwrite(path, np.stack(planes), metadata=None, photometric="minisblack")
    return path


@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_plain_few_plane_tiff_opens_as_channels(make_napari_viewer, tmp_path, crop, n):
    path = _plain_tiff(tmp_path / "cyx.tif", [crop // (i + 1) for i in range(n)])
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin=PLUGIN)
    assert [layer.name for layer in layers] == [f"cyx ch{i}" for i in range(n)]
    assert all(layer.data.shape == crop.shape for layer in layers)
    np.testing.assert_array_equal(layers[1].data, crop // 2)


def test_a_plain_tiff_of_many_planes_is_still_a_z_stack(make_napari_viewer, tmp_path, crop):
    path = _plain_tiff(tmp_path / "zyx.tif", [crop] * 5)
    (stack,) = make_napari_viewer().open(path, plugin=PLUGIN)
    assert stack.data.shape == (5, *crop.shape)
    assert stack.metadata["napari_unet"]["axes"] == "ZYX"


def test_segment_widget_overrides_the_axes_of_the_selected_layer(qtbot, ui, crop):
    viewer, seg, _ = ui
    layer = viewer.add_image(np.stack([crop, crop]), name="two")
    assert seg.axes_edit.text() == "ZYX"  # napari's convention for a 3D array
    assert not seg.set_axes("TZYX") and seg.axes_edit.text() == "ZYX"
    assert "not changed" in seg.status.text()
    assert seg.set_axes("cyx") and seg.axes_edit.text() == "CYX"
    assert layer.metadata["napari_unet"]["axes"] == "CYX"
    labels = segmented(qtbot, viewer, seg, crop, "other")  # the override stays with its layer
    seg.image_combo.select(layer)
    assert seg.axes_edit.text() == "CYX" and labels.data.shape == crop.shape


def test_save_selected_layers_keeps_calibration_and_the_smallest_type(qtbot, ui, crop,
                                                                      tmp_path):
    """...and, as every export, the package version and settings, but no folder of this
    machine (the image's own file is named without its folders)."""
    from napari.plugins._npe2 import file_extensions_string_for_layers

    viewer, seg, _ = ui
    tifffile.imwrite(tmp_path / "nuc.tif", crop, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "um"})
    (image,) = viewer.open(tmp_path / "nuc.tif", plugin=PLUGIN)
    seg.image_combo.select(image)
    assert seg.segment()
    qtbot.waitUntil(lambda: not seg.running and not seg.session.busy, timeout=30_000)
    labels = viewer.layers["nuc labels"]
    labels.data = np.where(labels.data > 0, 3, 0).astype(labels.data.dtype)
    viewer.layers.selection = {labels}
    filters, writers = file_extensions_string_for_layers(list(viewer.layers.selection))
    ours = next(w for w in writers if w.command == f"{PLUGIN}.write_labels")
    (written,) = viewer.layers.save(str(tmp_path / "saved.tif"), selected=True, _writer=ours)
    back = read_image(written)
    assert back.data.dtype == np.uint8 and back.pixel_size == pytest.approx((0.25, 0.25))
    assert back.unit == "um" and back.metadata["model"] == "tiny"
    assert back.metadata["napari_unet"] == napari_unet.__version__
    assert back.metadata["settings"]["device"] == "auto" and back.metadata["source"] == "nuc.tif"
    assert str(tmp_path) not in json.dumps(back.metadata)


def test_batch_labels_record_settings_and_version_but_no_folder(tmp_path, crop, tiny_model):
    from napari_unet.batch import segment_file

    tifffile.imwrite(tmp_path / "in.tif", crop)
    result = segment_file(tmp_path / "in.tif", tmp_path / "out.tif", tiny_model,
                          napari_unet.SegmentOptions(device="cpu", min_size=5))
    meta = read_image(result.labels).metadata
    assert meta["source"] == "in.tif" and meta["napari_unet"] == napari_unet.__version__
    assert meta["settings"]["min_size"] == 5 and str(tmp_path) not in json.dumps(meta)


def test_segment_status_names_model_and_settings_and_drops_stale_lines(qtbot, ui, crop):
    viewer, seg, _ = ui
    seg.min_size.setValue(7)
    long_name = "experiment_2026_plate_04_well_B07_" + "x" * 60 + "_DAPI"
    labels = segmented(qtbot, viewer, seg, crop, long_name)
    status = seg.status.text()
    assert "model tiny" in status and "min size 7" in status and "device" in status
    assert long_name not in status and "\u2026" in status and "_DAPI labels'" in status
    # The combo shows the name elided in the middle; the whole name is its tooltip.
    from qtpy.QtCore import Qt

    shown = seg.image_combo.itemText(seg.image_combo.currentIndex())
    assert shown.startswith("experiment_2026") and shown.endswith("_DAPI") and len(shown) <= 40
    from napari_unet._widgets._layer_combo import LayerCombo

    narrow = LayerCombo(viewer, lambda layer: layer.name == long_name)  # in a narrow dock
    qtbot.addWidget(narrow)
    narrow.show()
    narrow.resize(180, narrow.height())
    qtbot.waitUntil(lambda: narrow.width() <= 200)
    text = narrow.itemText(0)  # elided more, to the box's width, and still ends the same
    assert len(text) < len(shown) and text.endswith("_DAPI") and "\u2026" in text
    assert seg.image_combo.itemData(seg.image_combo.currentIndex(),
                                    Qt.ItemDataRole.ToolTipRole) == long_name
    # Another image: the line about the first one goes.
    other = viewer.add_image(crop, name="other")
    seg.image_combo.select(other)
    assert "model tiny" not in seg.status.text() and "'other'" in seg.status.text()
    # Back to the first: what made its labels; closing them takes the line away.
    seg.image_combo.select(viewer.layers[long_name])
    assert "model tiny" in seg.status.text()
    viewer.layers.remove(labels)
    assert "model tiny" not in seg.status.text()


def test_mark_reviewed_acts_on_the_selected_labels_layer(qtbot, ui, crop):
    viewer, seg, fine = ui
    first = segmented(qtbot, viewer, seg, crop, "a")
    second = segmented(qtbot, viewer, seg, crop, "b")
    fine.labels_combo.select(first)
    viewer.layers.selection.active = second
    assert fine.mark_reviewed() == crop.size
    session = seg.session
    assert session.link_for_labels(second).current_tracker().n_reviewed == crop.size
    assert session.link_for_labels(first).current_tracker().n_reviewed == 0
    assert fine.labels_combo.current() is second
