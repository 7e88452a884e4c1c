"""Make the screenshots of docs/user-guide.md from a real napari window.

Run under a display (on a headless machine: ``xvfb-run -a .venv/bin/python
scripts/make_screenshots.py``). It walks through the guide's loop with the real widgets:
open the nuclei sample, Segment, correct part of the image, Fine-tune, save the model,
export, plus the 3D sample and "Where to correct" on a fresh segmentation; then an H&E
section (the Colour choice) and a 3D stack in napari's 3D view. After each step it grabs the
whole window into docs/images/*.png (palette PNGs, each well under 300 KB); ``--only NAME``
makes one of them (``loop`` for 01-08, which build on each other).

The corrections are made the way a user makes them, with the Labels layer's editing API
(the same calls the brush and eraser make), copying the ground truth that ships with the
sample into one region of the image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch  # noqa: F401,I001  (torch before Qt, as in the tests)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-interactive-unet"  # the npe2 plugin name (src/napari_unet/napari.yaml)
DATA = ROOT / "tests" / "data"
STAINED = (DATA / "dsb2018_histo_brightfield" / "train" / "images"
           / "0121d6759c5adb290c8e828fc882f37dfaf3663ec885c663859948c154a443ed.png")
EMBRYO = DATA / "qcanet_mouse_embryo_3d" / "test" / "images" / "16_cell_stage.tif"
# "loop" is 01-08: one chain, each step builds on the one before.
SHOTS = ("loop", "09-stained-section", "10-stack-3d")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="model name or .safetensors path (default: shipped 'nuclei', else "
                             "runs/nuclei.safetensors)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps per round")
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--height", type=int, default=1200)  # room for the round report
    parser.add_argument("--only", choices=SHOTS, default=None,
                        help="make only these screenshots ('loop': 01-08); default: all")
    return parser.parse_args()


def find_model(name: str | None):
    import napari_unet

    candidates = [name] if name else ["nuclei", str(ROOT / "runs" / "nuclei.safetensors")]
    for candidate in candidates:
        try:
            return napari_unet.load_model(candidate), candidate
        except napari_unet.NapariUnetError:
            continue
    sys.exit(f"no model found among {candidates}; train one (scripts/train_shipped_models.sh) "
             "or pass --model")


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Keep the user's model folder out of it: saved models go to a temporary folder.
    os.environ["NAPARI_UNET_MODEL_DIR"] = tempfile.mkdtemp(prefix="napari-unet-shots-")

    import napari
    from PIL import Image
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_unet._widgets import _dialogs
    from napari_unet.sample_data import load_sample

    model, model_name = find_model(args.model)
    viewer = napari.Viewer(title="napari-unet", show=True)
    window = viewer.window._qt_window
    window.resize(args.width, args.height)
    app = QApplication.instance()

    def settle(seconds: float = 0.4) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.02)

    def wait(widget, limit: float = 600) -> None:
        start = time.time()
        while (widget.running or widget.session.busy) and time.time() - start < limit:
            app.processEvents()
            time.sleep(0.05)
        settle()

    def shot(name: str, toasts: bool = True) -> None:
        settle()
        if not toasts:  # close notification pop-ups that would hide the canvas
            from napari._qt.dialogs.qt_notification import NapariQtNotification

            for toast in window.findChildren(NapariQtNotification):
                toast.close()
            settle(0.6)
        image = window.grab().toImage()
        path = args.out / f"{name}.png"
        image.save(str(path))
        pil = Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        pil.save(path, optimize=True)
        print(f"{path}: {path.stat().st_size // 1024} KB")

    def guide_loop() -> None:
        """01-08: the guide's loop, one chain (each step builds on the last)."""
        # 1. Open the sample and the two widgets.
        (image,) = viewer.open_sample(PLUGIN, "nuclei_fluo")
        seg_dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
        fine_dock, fine = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct and fine-tune")
        settle()
        window.resizeDocks([seg_dock, fine_dock], [300, 700], Qt.Orientation.Vertical)
        if Path(model_name).suffix == ".safetensors":
            seg.load_model_file(Path(model_name))
        viewer.reset_view()
        shot("01-open")

        # 2. Segment.
        seg.segment()
        wait(seg)
        labels = viewer.layers[f"{image.name} labels"]
        shot("02-segmented")

        # 3. Correct one region: copy the ground truth there, as brush and eraser would.
        truth = np.asarray(load_sample("nuclei_fluo_labels").data)
        region = (slice(0, 260), slice(0, 350))
        current = np.asarray(labels.data)
        wrong = np.zeros(current.shape, bool)
        wrong[region] = (current[region] > 0) != (truth[region] > 0)
        idx = np.nonzero(wrong)
        offset = int(current.max())
        labels.data_setitem(idx, np.where(truth[idx] > 0, truth[idx] + offset, 0).astype(current.dtype))
        viewer.layers.selection.active = labels
        labels.mode = "paint"
        labels.selected_label = offset + int(truth.max()) + 1
        viewer.scene.camera.center = (130, 175)
        viewer.scene.camera.zoom = viewer.scene.camera.zoom * 1.5
        # Declare the region reviewed with a rectangle in a Shapes layer.
        shapes = viewer.add_shapes([[[0, 0], [0, 349], [259, 349], [259, 0]]], shape_type="rectangle",
                                   edge_color="yellow", face_color="transparent", edge_width=3,
                                   name="reviewed region")
        viewer.layers.selection.active = shapes
        fine.mark_reviewed()
        viewer.layers.selection.active = labels
        settle()
        shot("03-corrected")

        # 4. Fine-tune, then look at the re-segmented result.
        fine.steps.setValue(args.steps)
        fine.fine_tune()
        start = time.time()
        while fine.running and len(fine.loss_plot.values) < 5 and time.time() - start < 60:
            app.processEvents()
            time.sleep(0.05)
        shot("04-fine-tuning")
        wait(fine)
        shot("05-fine-tuned")
        report = fine.report
        print(f"round report: {report.text()}")
        if report.height() < report.heightForWidth(report.width()):
            print(f"warning: the round report is clipped ({report.height()} of "
                  f"{report.heightForWidth(report.width())} px shown); try a larger --height")

        # 5. Save the tuned model and export the labels (dialogs answered by the script).
        _dialogs.ask_model_name = lambda parent, suggestion: "nuclei-my-lab"
        fine.save_model()
        out = Path(tempfile.mkdtemp()) / "nuclei_fluo_labels.tif"
        _dialogs.ask_save_path = lambda parent, suggestion: out
        seg.export()
        shot("06-saved-and-exported")

        # 6. A 3D stack: the embryo sample, whole stack, objects joined across planes.
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        (embryo,) = viewer.open_sample(PLUGIN, "embryo_3d")
        seg.image_combo.select(embryo)
        seg.advanced.setChecked(True)
        seg.scope.setCurrentIndex(0)
        seg.stitch_3d.setChecked(True)
        seg.segment()
        wait(seg)
        viewer.dims.set_current_step(0, embryo.data.shape[0] // 2)
        viewer.reset_view()
        window.resizeDocks([seg_dock, fine_dock], [420, 580], Qt.Orientation.Vertical)
        shot("07-stack", toasts=False)

        # 7. Where to correct: the nuclei sample segmented with the shipped model, the map and
        # the ranked list, the view centred on the first entry that suspects a merged pair (as
        # a click on it does).
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        viewer.window.remove_dock_widget(fine_dock)
        (image,) = viewer.open_sample(PLUGIN, "nuclei_fluo")
        seg.image_combo.select(image)
        seg.advanced.setChecked(False)
        seg.model_combo.setCurrentIndex(seg.model_combo.findText(Path(model_name).stem))
        seg.segment()
        wait(seg)
        guide_dock, guide = viewer.window.add_plugin_dock_widget(PLUGIN, "Where to correct")
        window.resizeDocks([seg_dock, guide_dock], [330, 670], Qt.Orientation.Vertical)
        guide.find()
        wait(guide)
        viewer.reset_view()
        viewer.scene.camera.zoom = viewer.scene.camera.zoom * 3
        guide.list.setCurrentRow(next(i for i, c in enumerate(guide.candidates)
                                      if "joined" in c.reason))
        shot("08-where-to-correct", toasts=False)
        print(f"where to correct: {guide.status.text()}")
    def fresh_segment():
        """An empty viewer in 2D with a new Segment widget (default settings) and the model."""
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        for dock in list(viewer.window._wrapped_dock_widgets.values()):
            viewer.window.remove_dock_widget(dock)
        viewer.dims.ndisplay = 2
        seg_dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
        if Path(model_name).suffix == ".safetensors":
            seg.load_model_file(Path(model_name))
        else:
            seg.model_combo.setCurrentIndex(seg.model_combo.findText(model_name))
        settle()
        return seg_dock, seg

    def stained_section() -> None:
        """09: an H&E section (an RGBA PNG, opened by napari's own reader as a user dropping
        it would) segmented with Colour 'auto': the status line says what the model saw."""
        _, seg = fresh_segment()
        (image,) = viewer.open(STAINED)
        seg.image_combo.select(image)
        seg.advanced.setChecked(True)
        seg.rgb.setCurrentText("auto")
        seg.segment_button.click()
        wait(seg)
        viewer.layers.selection.active = image
        viewer.reset_view()
        shot("09-stained-section", toasts=False)
        print(f"stained section: {seg.status.text()}")

    def stack_3d() -> None:
        """10: the 16-cell embryo stack, objects in 3D with voxel size 2.18, 1, 1, in napari's
        3D view."""
        _, seg = fresh_segment()
        (stack,) = viewer.open(EMBRYO, plugin=PLUGIN)
        seg.image_combo.select(stack)
        seg.advanced.setChecked(True)
        seg.scope.setCurrentIndex(0)
        seg.stitch_3d.setChecked(True)
        seg.voxel_size.setText("2.18, 1, 1")
        seg.segment_button.click()
        wait(seg)
        labels = viewer.layers[f"{stack.name} labels"]
        print(f"stack 3d: {seg.status.text()} image scale {tuple(stack.scale)}, labels scale "
              f"{tuple(labels.scale)}, {int(labels.data.max())} ids")
        viewer.dims.ndisplay = 3
        viewer.reset_view()
        viewer.scene.camera.angles = (30, 40, 150)  # oblique: the objects as ellipsoids
        shot("10-stack-3d", toasts=False)

    if args.only in (None, "loop"):
        guide_loop()
    if args.only in (None, "09-stained-section"):
        stained_section()
    if args.only in (None, "10-stack-3d"):
        stack_3d()
    viewer.close()


if __name__ == "__main__":
    main()
