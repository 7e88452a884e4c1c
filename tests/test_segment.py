"""Tests for napari_unet.segment: every axes layout in, labels of the right shape out.

Most tests use a stand-in network whose output follows the image intensity (see
``_data.IntensityNet``), so real images give real objects without a trained model; the
layout, id and stitching logic under test is the same for any network.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from _data import DSB_TRAIN, dsb_pair, dsb_rgba, intensity_model, qcanet_stack, small_model

from napari_unet.errors import Cancelled, InvalidImageError
from napari_unet.metrics import foreground_iou
from napari_unet.progress import CancelToken
from napari_unet.segment import segment


@pytest.fixture(scope="module")
def nuclei(real_data) -> tuple[np.ndarray, np.ndarray]:
    image, mask = dsb_pair(real_data, DSB_TRAIN[0])
    return image[:96, :128].copy(), mask[:96, :128].copy()


@pytest.fixture(scope="module")
def embryo(real_data) -> np.ndarray:
    """3 planes of 64x64 through the middle of the QCANet embryo (ZYX uint16)."""
    return qcanet_stack(real_data)[25:28, 28:92, 29:93].copy()


@pytest.fixture(scope="module")
def model():
    return intensity_model()


def _ids(labels: np.ndarray) -> set[int]:
    return set(np.unique(labels).tolist()) - {0}


def test_yx(nuclei, model) -> None:
    image, mask = nuclei
    labels = segment(image, model, device="cpu")
    assert labels.shape == image.shape
    assert labels.dtype.kind == "u"
    assert len(_ids(labels)) >= 5
    assert foreground_iou(mask, labels) > 0.4  # the stand-in finds the nuclei (measured 0.55)
    assert _ids(labels) == set(range(1, labels.max() + 1))  # sequential ids


def test_rgb_with_a_three_channel_model(nuclei) -> None:
    image, _ = nuclei
    rgb = np.stack([image, image // 2, image], -1)
    labels = segment(rgb, intensity_model(in_channels=3), device="cpu")
    assert labels.shape == image.shape and labels.max() > 0


def test_rgba_png_with_a_gray_model_is_segmented_as_gray(real_data, model) -> None:
    """A DSB PNG as stored (RGBA) segments like its gray plane, as in training."""
    rgba = dsb_rgba(real_data, DSB_TRAIN[0])[:96, :128]
    gray = segment(rgba[..., 0], model, device="cpu")
    np.testing.assert_array_equal(segment(rgba, model, device="cpu"), gray)
    np.testing.assert_array_equal(segment(rgba[..., :3], model, axes="YXC", device="cpu"), gray)


def test_cyx(nuclei) -> None:
    image, _ = nuclei
    cyx = np.stack([image, image])
    labels = segment(cyx, intensity_model(in_channels=2), device="cpu")  # guessed as CYX
    assert labels.shape == image.shape and labels.max() > 0
    yxc = np.moveaxis(cyx, 0, -1)
    np.testing.assert_array_equal(
        segment(yxc, intensity_model(in_channels=2), axes="YXC", device="cpu"), labels)


def test_zyx_ids_are_unique_across_planes(embryo, model) -> None:
    labels = segment(embryo, model, device="cpu")
    assert labels.shape == embryo.shape
    per_plane = [_ids(p) for p in labels]
    assert all(per_plane), "every plane of this crop holds nuclei"
    assert sum(len(s) for s in per_plane) == len(set().union(*per_plane))
    # each plane's result equals segmenting that plane alone (up to the id offset)
    alone = segment(embryo[1], model, device="cpu")
    np.testing.assert_array_equal(alone > 0, labels[1] > 0)


def test_stitch_3d_joins_objects_across_planes(embryo, model) -> None:
    plain = segment(embryo, model, device="cpu")
    stitched = segment(embryo, model, device="cpu", stitch_3d=True)
    # built in 3D: a plane's foreground without a seed of its own joins a neighbour's object
    assert foreground_iou(plain > 0, stitched > 0) > 0.9
    assert len(_ids(stitched)) < len(_ids(plain))  # measured 6 vs 9
    # a nucleus seen in consecutive planes now has one id
    z0, z1 = stitched[0], stitched[1]
    assert _ids(z0) & _ids(z1)


def test_tzyx(embryo, model) -> None:
    tzyx = np.stack([embryo[:, :32, :48], embryo[:, 32:, 16:]])  # (2, 3, 32, 48)
    labels = segment(tzyx, model, axes="TZYX", device="cpu")
    assert labels.shape == (2, 3, 32, 48)
    counts = [len(_ids(labels[t, z])) for t in range(2) for z in range(3)]
    assert sum(counts) == len(_ids(labels))  # unique over the whole hyperstack
    stitched = segment(tzyx, model, axes="TZYX", device="cpu", stitch_3d=True)
    # stitching joins along Z within a time point, never across time points
    assert not (_ids(stitched[0]) & _ids(stitched[1]))
    assert len(_ids(stitched)) <= len(_ids(labels))


def test_stitching_keeps_ids_unique_after_an_empty_time_point(embryo, model) -> None:
    crop = embryo[:, :32, :48]
    tzyx = np.stack([crop, np.zeros_like(crop), crop])
    stitched = segment(tzyx, model, axes="TZYX", device="cpu", stitch_3d=True)
    assert _ids(stitched[0]) and not _ids(stitched[1])
    assert not (_ids(stitched[0]) & _ids(stitched[2]))


def test_axes_order_follows_the_image(embryo, model) -> None:
    yxz = np.moveaxis(embryo, 0, -1)
    labels = segment(yxz, model, axes="YXZ", device="cpu")
    assert labels.shape == embryo.shape  # labels come back as stack axes + YX
    np.testing.assert_array_equal(labels > 0, segment(embryo, model, device="cpu") > 0)


def test_dask_input_gives_the_numpy_result(embryo, model) -> None:
    lazy = da.from_array(embryo, chunks=(1, 64, 64))
    np.testing.assert_array_equal(segment(lazy, model, device="cpu"),
                                  segment(embryo, model, device="cpu"))


def test_constant_image_gives_no_objects(model) -> None:
    for m in (model, small_model(seed=0)):  # stand-in and a real random U-Net
        labels = segment(np.full((40, 48), 500, np.uint16), m, device="cpu")
        assert labels.shape == (40, 48) and not labels.any()


@pytest.mark.parametrize("shape", [(0, 0), (0, 32), (3, 0, 32)])
def test_empty_image_is_refused(model, shape) -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        segment(np.zeros(shape, np.uint8), model, device="cpu")


def test_wrong_axes_are_refused(nuclei, model) -> None:
    with pytest.raises(InvalidImageError):
        segment(nuclei[0], model, axes="ZYX", device="cpu")


def test_postprocess_override(nuclei, model) -> None:
    image, _ = nuclei
    default = segment(image, model, device="cpu")
    big_only = segment(image, model, device="cpu", min_size=10**6)
    assert default.max() > 0 and not big_only.any()
    assert model.config.postprocess.min_size == 10  # the model itself is unchanged


def test_semantic_model_gives_class_indices(nuclei) -> None:
    labels = segment(nuclei[0], small_model(task="semantic"), device="cpu")
    assert labels.shape == nuclei[0].shape and set(np.unique(labels)) <= {0, 1}


def test_progress_over_a_stack_and_cancel(embryo, model) -> None:
    calls = []
    segment(embryo, model, device="cpu", tile_size=32, tile_overlap=0, batch_size=1,
            progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12)  # 3 planes x 4 tiles
    assert [d for d, _ in calls] == list(range(1, 13))

    token = CancelToken()

    def stop_after_first_plane(done: int, total: int) -> None:
        if done == 4:
            token.cancel()

    with pytest.raises(Cancelled):
        segment(embryo, model, device="cpu", tile_size=32, tile_overlap=0,
                progress=stop_after_first_plane, cancel=token)


def test_predictor_runs_the_network_in_eval_mode(nuclei) -> None:
    """Batch statistics must never leak into predictions: a model left in training mode
    predicts exactly like the same network in eval mode."""
    import torch

    from napari_unet.segment import Predictor, prepare_image

    model = small_model(seed=0)
    model.network.train()
    plane = prepare_image(nuclei[0][:64, :64], model).plane(())
    probs = Predictor(model, "cpu", fast=False).probabilities(plane)
    with torch.no_grad():
        expected = torch.softmax(model.network.eval()(torch.from_numpy(plane[None])), 1)[0]
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)


def test_rgb_stack_with_a_gray_model(embryo, model) -> None:
    """Colour stacks become gray plane by plane, like colour planes."""
    rgb = np.stack([embryo, embryo, embryo], -1)  # ZYXC
    np.testing.assert_array_equal(segment(rgb, model, axes="ZYXC", device="cpu"),
                                  segment(embryo, model, device="cpu"))


def test_chosen_planes_match_a_whole_stack_run(embryo, model) -> None:
    stack = embryo.astype(np.float32)
    stack[0] *= 20  # a very bright plane moves the stack's percentiles, not plane 1's own
    whole = segment(stack, model, device="cpu")
    only = segment(stack, model, device="cpu", planes=[(1,)])
    np.testing.assert_array_equal(only[1] > 0, whole[1] > 0)
    assert not only[0].any() and not only[2].any()
    alone = segment(stack[1], model, device="cpu")  # normalised by its own percentiles
    assert (alone > 0).sum() != (only[1] > 0).sum()
    with pytest.raises(InvalidImageError, match="not in a stack"):
        segment(embryo, model, device="cpu", planes=[(99,)])


def test_options_and_their_shorthand_give_the_same_labels(nuclei, model) -> None:
    from napari_unet.options import SegmentOptions

    image, _ = nuclei
    options = SegmentOptions(device="cpu", tile_size=64, min_size=30)
    expected = segment(image, model, "YX", options)
    np.testing.assert_array_equal(
        segment(image, model, "YX", device="cpu", tile_size=64, min_size=30), expected)
    # a keyword changes the options for this call only
    np.testing.assert_array_equal(
        segment(image, model, "YX", SegmentOptions(tile_size=64, min_size=30), device="cpu"),
        expected)


def test_an_unknown_option_is_refused_by_name(nuclei, model) -> None:
    from napari_unet.errors import InvalidSettingError

    with pytest.raises(InvalidSettingError, match="unknown segment option.*tile_sise"):
        segment(nuclei[0], model, device="cpu", tile_sise=64)


def test_object_size_resizes_through_the_model_and_leaves_it_unchanged(nuclei) -> None:
    model = intensity_model()
    model.config.object_diameter = 20.0
    image, _ = nuclei
    resized = segment(image, model, device="cpu", object_size=40.0)
    np.testing.assert_array_equal(resized,
                                  segment(image, model.for_object_size(40.0), device="cpu"))
    assert model.config.input_scale == 1.0


def test_test_time_augmentation_averages_the_mirrors_mirrored_back(nuclei) -> None:
    """With ``tta`` the prediction of a mirrored plane is the mirrored prediction: the four
    mirrors are each mirrored back before averaging (a random network is not symmetric)."""
    from napari_unet.segment import Predictor, prepare_image

    model = small_model(seed=0)
    plane = prepare_image(nuclei[0][:64, :64], model).plane(())
    mirrored = np.ascontiguousarray(plane[:, :, ::-1])
    plain = Predictor(model, "cpu", fast=False)
    assert not np.allclose(plain.probabilities(mirrored)[:, :, ::-1], plain.probabilities(plane),
                           atol=1e-3)  # one pass is not mirror-symmetric
    tta = Predictor(model, "cpu", fast=False, tta=True)
    np.testing.assert_allclose(tta.probabilities(mirrored)[:, :, ::-1], tta.probabilities(plane),
                               atol=1e-5)
    np.testing.assert_allclose(tta.probabilities(plane).sum(0), 1.0, atol=1e-5)


def test_test_time_augmentation_counts_every_pass(embryo, model) -> None:
    calls = []
    segment(embryo[:1], model, device="cpu", tile_size=32, tile_overlap=0, batch_size=1,
            tta=True, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (16, 16)  # 4 mirrors x 4 tiles
    assert [d for d, _ in calls] == list(range(1, 17))
