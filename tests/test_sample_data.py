"""The bundled samples are the documented real images, unchanged, with their calibration."""

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_unet.errors import ImageReadError
from napari_unet.io import read_labels
from napari_unet.sample_data import SAMPLES, load_sample, sample_path

DSB_ID = "07fb37aafa6626608af90c1e18f6a743f29b6b233d2e427dcd1102df6a916cf5"


@pytest.mark.parametrize(
    ("name", "axes", "shape", "dtype"),
    [
        ("nuclei_fluo", "YX", (520, 696), np.uint8),
        ("nuclei_fluo_labels", "YX", (520, 696), np.uint16),
        ("em_membrane", "YX", (512, 512), np.uint8),
        ("embryo_3d", "ZYX", (51, 120, 122), np.uint16),
    ],
)
def test_samples_load(name, axes, shape, dtype):
    image = load_sample(name)
    assert (image.axes, image.data.shape, image.data.dtype) == (axes, shape, dtype)
    assert isinstance(image.data, np.ndarray)


def test_samples_are_the_shared_data(shared_data):
    fluo = iio.imread(shared_data / "dsb2018_fluo/test/images" / f"{DSB_ID}.png")
    np.testing.assert_array_equal(load_sample("nuclei_fluo").data, fluo[..., 0])
    mask = shared_data / "dsb2018_fluo/test/masks" / f"{DSB_ID}.tif"
    assert sample_path("nuclei_fluo_labels").read_bytes() == mask.read_bytes()
    em = iio.imread(shared_data / "isbi2012_em_membrane/test/images/0.png")
    np.testing.assert_array_equal(load_sample("em_membrane").data, em)
    embryo = tifffile.imread(shared_data / "qcanet_mouse_embryo_3d/test/images/16_cell_stage.tif")
    np.testing.assert_array_equal(load_sample("embryo_3d").data, embryo)


def test_nuclei_labels_are_instances():
    labels = read_labels(sample_path("nuclei_fluo_labels"))
    assert len(np.unique(labels)) == 314  # background + 313 nuclei


def test_embryo_keeps_its_anisotropy():
    image = load_sample("embryo_3d")
    assert image.pixel_size == pytest.approx((2.18, 1.0, 1.0))
    assert image.unit == "pixel"


def test_unknown_sample_names_the_choices():
    with pytest.raises(ImageReadError, match="nuclei_fluo"):
        sample_path("nuclei")


def test_attribution_covers_every_file():
    folder = sample_path("nuclei_fluo").parent
    text = (folder / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for file in sorted(p.name for p in folder.glob("*.tif")):
        assert f"`{file}`" in text
    assert set(SAMPLES.values()) == {p.name for p in folder.glob("*.tif")}
    for phrase in ("CC0", "MIT", "doi:10.1038/s41592-019-0612-7", "doi:10.1038/s41540-020-00152-8",
                   "Arganda-Carreras"):
        assert phrase in text
