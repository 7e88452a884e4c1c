"""Tests for napari_unet.evaluation: scoring folders, and the CSV it writes."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from _data import DSB_TEST, dsb_pair, intensity_model, membrane_model, pair_folder, small_model

from napari_unet.errors import Cancelled, DatasetError, InvalidLabelsError, OutputWriteError
from napari_unet.evaluation import evaluate
from napari_unet.progress import CancelToken
from napari_unet.scores import score_image
from napari_unet.segment import segment


@pytest.fixture(scope="module")
def dsb_folder(real_data, tmp_path_factory) -> Path:
    return pair_folder(tmp_path_factory.mktemp("eval") / "test", real_data, DSB_TEST, "test")


@pytest.fixture(scope="module")
def result(dsb_folder):
    return evaluate(intensity_model(), dsb_folder, device="cpu")


def test_instance_evaluation_rows_and_summary(result, real_data) -> None:
    assert [r["image"] for r in result.rows] == list(DSB_TEST)
    true_counts = [len(np.unique(dsb_pair(real_data, s, "test")[1])) - 1 for s in DSB_TEST]
    assert [r["n_true"] for r in result.rows] == true_counts == [27, 32]
    assert result.summary["n_images"] == 2
    assert result.summary["n_true"] == 59
    assert result.summary["n_pred"] == sum(r["n_pred"] for r in result.rows) > 0
    assert {"acc@0.5", "f1@0.9", "fg_iou"} <= set(result.rows[0])
    assert [t["threshold"] for t in result.summary["per_threshold"]][0] == 0.5


def test_evaluation_scores_what_segment_gives(result, real_data) -> None:
    """Each row equals scoring segment()'s labels of the same pair by hand, so pairs are
    matched and images read (RGBA PNG -> gray) as the evaluation claims."""
    model = intensity_model()
    for stem, row in zip(DSB_TEST, result.rows):
        image, mask = dsb_pair(real_data, stem, "test")
        expected = score_image(stem, mask, segment(image, model, device="cpu"))
        assert row["n_pred"] == expected.n_pred
        assert row["acc@0.5"] == pytest.approx(expected.counts[0].accuracy)
        assert row["fg_iou"] == pytest.approx(expected.foreground_iou)
    assert result.rows[0]["acc@0.5"] > 0.2  # the stand-in finds nuclei (measured 0.44)


def test_a_model_that_finds_nothing_scores_zero(dsb_folder) -> None:
    res = evaluate(small_model(), dsb_folder, device="cpu", limit=1)
    assert len(res.rows) == 1
    assert res.summary["n_pred"] == 0 and res.summary["mean_accuracy"] == 0.0


def test_write_csv_rows_overall_and_no_overwrite(result, tmp_path: Path) -> None:
    path = result.write_csv(tmp_path / "scores.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == list(DSB_TEST) + ["overall"]
    overall = rows[-1]
    assert int(overall["n_true"]) == 59 and int(overall["n_images"]) == 2
    assert float(overall["mean_accuracy"]) == pytest.approx(result.summary["mean_accuracy"])
    first = result.summary["per_threshold"][0]
    assert float(overall["acc@0.5"]) == pytest.approx(first["accuracy"])
    assert float(overall["f1@0.5"]) == pytest.approx(first["f1"])
    assert float(overall["fg_iou"]) == pytest.approx(result.summary["mean_foreground_iou"])
    assert float(rows[0]["acc@0.5"]) == pytest.approx(result.rows[0]["acc@0.5"])

    before = path.read_bytes()
    with pytest.raises(OutputWriteError, match="exists"):
        result.write_csv(path)
    assert path.read_bytes() == before
    path.write_text("old")
    result.write_csv(path, overwrite=True)
    assert path.read_bytes() == before


def test_semantic_evaluation_on_an_isbi_image(real_data, tmp_path: Path) -> None:
    folder = tmp_path / "isbi"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        full = iio.imread(real_data / "isbi2012_em_membrane" / "train" / sub / "0.png")
        iio.imwrite(folder / sub / "0.png", np.asarray(full)[:256, :256])
    res = evaluate(membrane_model(), folder, device="cpu", invert_masks=True)
    assert res.rows[0]["image"] == "0"
    assert set(res.summary) == {"pixel_error", "adapted_rand_error", "n_images"}
    assert 0 <= res.summary["adapted_rand_error"] <= 1
    # the stand-in calls dark pixels membrane: close to the ISBI masks (0 = membrane)
    assert res.summary["pixel_error"] < 0.2  # measured 0.11
    flipped = evaluate(membrane_model(), folder, device="cpu", invert_masks=False)
    assert res.summary["pixel_error"] + flipped.summary["pixel_error"] == pytest.approx(1.0)
    res.write_csv(tmp_path / "isbi.csv")
    assert (tmp_path / "isbi.csv").read_text().splitlines()[-1].startswith("overall,")


def test_progress_and_cancel(dsb_folder) -> None:
    calls = []
    evaluate(intensity_model(), dsb_folder, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate(intensity_model(), dsb_folder, device="cpu", cancel=token)


def test_folder_without_pairs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        evaluate(intensity_model(), tmp_path, device="cpu")


def _colour_folder(folder: Path, mask: np.ndarray) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    image = np.zeros((32, 32), np.uint8)
    image[4:12, 4:12] = image[4:12, 20:28] = image[20:28, 4:12] = 200
    iio.imwrite(folder / "images" / "a.png", image)
    iio.imwrite(folder / "masks" / "a.png", mask)
    return folder


def test_a_colour_coded_mask_is_refused_naming_the_file(tmp_path: Path) -> None:
    # Three objects coded by colour: red, green, blue. Read as the red channel, two of them
    # would vanish (3 objects scored as 1); the mask must be refused, not half read.
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[4:12, 4:12, 0] = mask[4:12, 20:28, 1] = mask[20:28, 4:12, 2] = 255
    folder = _colour_folder(tmp_path / "d", mask)
    with pytest.raises(InvalidLabelsError, match=r"(?s)a\.png.*one label image"):
        evaluate(intensity_model(), folder, device="cpu")


def test_a_gray_mask_saved_as_rgb_or_rgba_is_still_read(tmp_path: Path) -> None:
    gray = np.zeros((32, 32), np.uint8)
    gray[4:12, 4:12], gray[4:12, 20:28], gray[20:28, 4:12] = 1, 2, 3
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    for name, mask in (("rgb", rgba[..., :3]), ("rgba", rgba)):
        result = evaluate(intensity_model(), _colour_folder(tmp_path / name, mask), device="cpu")
        assert result.scores[0].n_true == 3


def test_a_stack_is_segmented_and_scored_in_3d(real_data):
    """The embryo crop's binary mask counts its 3D components (7 nuclei) as the objects;
    the stack is segmented whole with 3D objects, so each nucleus is one predicted object."""
    from napari_unet.registry import load_model

    result = evaluate(load_model("nuclei"), real_data / "qcanet_mouse_embryo_3d/train",
                      device="cpu", voxel_size=(2.18, 1.0, 1.0))
    assert result.summary["n_true"] == 7
    assert result.summary["per_threshold"][0]["accuracy"] >= 0.6
