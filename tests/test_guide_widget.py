"""The "Where to correct" dock widget, driven like a user would: real viewer, real buttons,
real workers (under Xvfb, started by pytest-xvfb).

Segment with the shipped ``nuclei`` model, press "Find where to correct", click an entry:
the view centres on it (in world coordinates, through the layer's scale and translation;
on its plane in a stack). The ranking uses the probabilities Segment kept, with no
network pass of its own.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._package import PLUGIN
from napari_unet.io import read_image
from napari_unet.sample_data import load_sample


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """An empty user model folder, so tests never see (or write) the real one."""
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))


@pytest.fixture
def guide_ui(make_napari_viewer, user_models):
    """A viewer with Segment and Where to correct opened from the plugin menu, the shipped
    nuclei model selected."""
    from napari_unet._widgets._guide import GuideWidget

    viewer = make_napari_viewer()
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    _, guide = viewer.window.add_plugin_dock_widget(PLUGIN, "Where to correct")
    assert isinstance(guide, GuideWidget) and guide.session is seg.session
    names = [seg.model_combo.itemText(i) for i in range(seg.model_combo.count())]
    seg.model_combo.setCurrentIndex(names.index("nuclei"))
    return viewer, seg, guide


def camera(viewer):
    from napari_unet._widgets._guide import camera as viewer_camera

    return viewer_camera(viewer)


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.running and not widget.session.busy, timeout=timeout)


def _click(qtbot, button):
    from qtpy.QtCore import Qt

    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _click_entry(qtbot, guide, row: int) -> None:
    from qtpy.QtCore import Qt

    rect = guide.list.visualItemRect(guide.list.item(row))
    qtbot.mouseClick(guide.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def _segment(qtbot, viewer, seg, data, **layer_kwargs):
    layer = viewer.add_image(data, name="nuclei", **layer_kwargs)
    seg.image_combo.select(layer)
    _click(qtbot, seg.segment_button)
    _wait_idle(qtbot, seg)
    return viewer.layers["nuclei labels"]


def test_find_and_click_centres_the_view_on_the_candidate(qtbot, guide_ui, monkeypatch):
    viewer, seg, guide = guide_ui
    image = np.asarray(load_sample("nuclei_fluo").data)[:256, :256]
    labels = _segment(qtbot, viewer, seg, image, scale=(0.5, 0.5), translate=(10, 20))
    assert guide.labels_combo.current() is labels

    # no network pass: the probabilities Segment kept are enough
    import napari_unet._widgets._jobs as jobs

    def no_pass(*args, **kwargs):
        raise AssertionError("Where to correct ran the network again")

    monkeypatch.setattr(jobs, "segment", no_pass)
    _click(qtbot, guide.find_button)
    _wait_idle(qtbot, guide)
    assert "places to check" in guide.status.text(), guide.status.text()
    assert "predicted again" not in guide.status.text()
    assert guide.list.count() == min(len(guide.candidates), 30) > 3
    scores = [c.score for c in guide.candidates]
    assert scores == sorted(scores, reverse=True)

    heat = viewer.layers["where to correct"]
    assert heat.data.shape == labels.data.shape and heat.data.dtype == np.float32
    np.testing.assert_allclose(heat.scale, labels.scale)
    np.testing.assert_allclose(heat.translate, labels.translate)
    assert heat.data.min() >= 0.0 and heat.data.max() <= 1.0

    for row in (3, 0):
        _click_entry(qtbot, guide, row)
        candidate = guide.candidates[row]
        expected = (10 + 0.5 * candidate.centre[0], 20 + 0.5 * candidate.centre[1])
        np.testing.assert_allclose(camera(viewer).center[-2:], expected, atol=1e-6)
        assert f"#{row + 1}" in guide.status.text()
        # a rectangle marks it, and the labels stay active for the brush
        mark = viewer.layers["where to correct: entry"]
        y0, x0, y1, x1 = candidate.bbox
        world = mark.data_to_world(mark.data[0].mean(0))
        centre = ((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2)  # of the box, 2 px wider each side
        np.testing.assert_allclose(world, (10 + 0.5 * centre[0], 20 + 0.5 * centre[1]))
        assert viewer.layers.selection.active is labels


def test_corrected_objects_leave_the_list(qtbot, guide_ui):
    viewer, seg, guide = guide_ui
    image = np.asarray(load_sample("nuclei_fluo").data)[:256, :256]
    labels = _segment(qtbot, viewer, seg, image)
    guide.find()
    _wait_idle(qtbot, guide)
    first = next(c for c in guide.candidates if c.kind == "object")
    # the user redraws that object (one brush stroke over its centre, with a new id, the
    # brush wide enough to cover it all: the first candidate may be far from round)
    y0, x0, y1, x1 = first.bbox
    labels.brush_size = int(np.hypot(y1 - y0, x1 - x0)) + 4
    labels.paint(tuple(int(round(v)) for v in first.centre), int(labels.data.max()) + 1)
    guide.find()
    _wait_idle(qtbot, guide)
    assert all(c.label != first.label for c in guide.candidates if c.kind == "object")
    assert all(np.hypot(c.centre[0] - first.centre[0], c.centre[1] - first.centre[1]) > 3
               for c in guide.candidates)


def test_a_stack_entry_takes_the_view_to_its_plane(qtbot, guide_ui, real_data):
    viewer, seg, guide = guide_ui
    stack = read_image(real_data / "qcanet_mouse_embryo_3d/test/images/16_cell_stage.tif")
    crop = np.asarray(stack.data)[20:26, :96, :96]
    layer = viewer.add_image(crop, name="embryo", scale=(2.0, 1.0, 1.0))
    seg.image_combo.select(layer)
    _click(qtbot, seg.segment_button)
    _wait_idle(qtbot, seg)
    viewer.dims.set_current_step(0, 0)
    guide.find()
    _wait_idle(qtbot, guide)
    planes = {c.plane for c in guide.candidates}
    assert len(planes) > 1  # one ranking over the whole stack
    row = next(k for k, c in enumerate(guide.candidates[:30]) if c.plane != (0,))
    _click_entry(qtbot, guide, row)
    candidate = guide.candidates[row]
    assert viewer.dims.current_step[0] == candidate.plane[0]
    np.testing.assert_allclose(camera(viewer).center[-2:], candidate.centre, atol=1e-6)
    assert f"plane {candidate.plane}" in guide.list.item(row).text()


def test_labels_without_kept_probabilities_are_predicted_again_and_said_so(qtbot, guide_ui):
    viewer, seg, guide = guide_ui
    image = np.asarray(load_sample("nuclei_fluo").data)[:128, :128]
    labels = _segment(qtbot, viewer, seg, image)
    seg.session.link_for_labels(labels).probabilities = None  # e.g. reopened from a session
    guide.find()
    _wait_idle(qtbot, guide)
    assert "predicted again" in guide.status.text() and guide.candidates


def test_another_model_version_keeps_the_previous_labels_for_the_ranking(qtbot, guide_ui):
    viewer, seg, guide = guide_ui
    image = np.asarray(load_sample("nuclei_fluo").data)[:128, :128]
    labels = _segment(qtbot, viewer, seg, image)
    link = seg.session.link_for_labels(labels)
    before = np.array(labels.data)
    assert link.previous is None  # one version so far: nothing to compare with
    tuned = seg.session.versions.active_model.copy(name="other")
    tuned.config.input_scale = 0.5  # a version that sees the image at half size
    seg.add_model(tuned, label="other")
    _click(qtbot, seg.segment_button)
    _wait_idle(qtbot, seg)
    np.testing.assert_array_equal(link.previous, before)
    guide.find()
    _wait_idle(qtbot, guide)
    assert any("previous model version" in c.reason for c in guide.candidates)
