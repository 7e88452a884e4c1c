"""Tests for napari_unet.volume: objects built in 3D from the stacked per-plane
probabilities, on the QCANet embryo crop in tests/data with its mask, and the shipped
``nuclei`` model (the 3D step is about real probabilities, not a stand-in network)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _data import qcanet_stack
from scipy import ndimage as ndi

from napari_unet import SegmentOptions
from napari_unet.axes import make_layout
from napari_unet.errors import InvalidSettingError, PlaneByPlaneWarning
from napari_unet.postprocess import keep_ids
from napari_unet.registry import load_model
from napari_unet.scores import score_image
from napari_unet.segment import segment, stitch_along_z

EMBRYO_MASK = "qcanet_mouse_embryo_3d/train/masks/8_cell_stage.tif"
VOXEL = (2.18, 1.0, 1.0)  # the QCANet configs' z:y:x resolution


@pytest.fixture(scope="module")
def embryo(real_data) -> tuple[np.ndarray, np.ndarray]:
    """The (28, 92, 93) embryo crop and its 7 nuclei (3D components of the binary mask)."""
    truth, _ = ndi.label(tifffile.imread(real_data / EMBRYO_MASK) > 0)
    return qcanet_stack(real_data), truth


@pytest.fixture(scope="module")
def nuclei():
    return load_model("nuclei")


@pytest.fixture(scope="module")
def objects(embryo, nuclei) -> np.ndarray:
    return segment(embryo[0], nuclei, "ZYX", device="cpu", stitch_3d=True, voxel_size=VOXEL)


def test_3d_objects_match_the_nuclei_better_than_joined_planes(embryo, nuclei, objects):
    image, truth = embryo
    joined = segment(image, nuclei, "ZYX", device="cpu").astype(np.uint32)
    stitch_along_z(joined, make_layout(image, "ZYX", 1))  # the previous stitch_3d
    built = score_image("3d", truth, objects).counts[0]
    planes = score_image("joined", truth, joined).counts[0]
    assert built.accuracy >= 0.6 > planes.accuracy  # 0.625 and 0.5 when written
    assert built.n_pred == len(np.unique(objects)) - 1


def test_a_plane_segmented_again_keeps_the_ids_of_the_3d_objects(embryo, nuclei, objects):
    z = 12  # a plane through several nuclei
    again = segment(embryo[0], nuclei, "ZYX", device="cpu", planes=[(z,)])[z]
    kept, next_id = keep_ids(again, objects[z], int(objects.max()) + 1)
    old = set(np.unique(objects[z])) - {0}
    new = set(np.unique(kept)) - {0}
    assert len(old) >= 3 and len(new & old) >= len(old) - 1
    assert next_id == int(objects.max()) + 1 + len(new - old)


def test_too_large_a_stack_is_joined_plane_by_plane_with_a_warning(embryo, nuclei, objects,
                                                                   monkeypatch):
    image = embryo[0][10:14]
    monkeypatch.setattr("napari_unet.volume.MAX_VOXELS", image.size - 1)
    with pytest.warns(PlaneByPlaneWarning, match="joined plane by plane"):
        labels = segment(image, nuclei, "ZYX", device="cpu", stitch_3d=True)
    assert labels.shape == image.shape and labels.max() > 0


def test_labels_written_out_of_core_are_the_3d_objects(embryo, nuclei, objects):
    out = np.zeros(objects.shape, np.uint32)
    segment(embryo[0], nuclei, "ZYX", device="cpu", stitch_3d=True, voxel_size=VOXEL, out=out)
    np.testing.assert_array_equal(out, objects)


@pytest.mark.parametrize("value", [(2.18, 1.0), (0.0, 1.0, 1.0), (float("nan"), 1, 1), "2,1,1"])
def test_a_bad_voxel_size_is_refused(value):
    with pytest.raises(InvalidSettingError, match="voxel_size is"):
        SegmentOptions(voxel_size=value)


def test_a_voxel_size_list_is_kept_as_a_tuple():
    assert SegmentOptions(voxel_size=[2, 1, 1]).voxel_size == (2.0, 1.0, 1.0)
