"""The plugin's napari side without widgets: manifest, reader, writer and sample data,
through napari's own plugin machinery (``viewer.open(..., plugin=PLUGIN)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet._package import PLUGIN
from napari_unet._reader import get_reader
from napari_unet._writer import labels_to_tiff, write_labels_layer
from napari_unet.errors import ImageReadError, InvalidLabelsError
from napari_unet.io import create_labels, read_image, write_labels

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_unet" / "napari.yaml"


# --------------------------------------------------------------------------- manifest


def test_manifest_is_valid_and_discovered():
    import npe2

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # every python_name resolves
    assert manifest.name == PLUGIN
    contrib = manifest.contributions
    assert {s.key for s in contrib.sample_data} == {"nuclei_fluo", "em_membrane", "embryo_3d"}
    assert {w.display_name for w in contrib.widgets} == {"Segment", "Correct and fine-tune",
                                                         "Where to correct"}
    menu = contrib.menus["napari/layers/segment"]
    assert {m.command for m in menu} == {w.command for w in contrib.widgets}
    assert contrib.writers[0].layer_types == ["labels"]
    names = [manifest.display_name] + [w.display_name for w in contrib.widgets] + [
        s.display_name for s in contrib.sample_data]
    for name in names:
        assert name[0].isalnum() and name[-1].isalnum(), name
    # Installed (editable) and found through the napari.manifest entry point.
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert pm.get_manifest(PLUGIN).name == PLUGIN
    # The top-level napari.yaml is the same file.
    assert (ROOT / "napari.yaml").resolve() == MANIFEST.resolve()


def test_npe2_validate_command():
    from npe2.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(MANIFEST)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


# --------------------------------------------------------------------------- reader (no viewer)


def test_get_reader_accepts_tiff_only(tmp_path):
    assert get_reader(str(tmp_path / "a.tif")) is not None
    assert get_reader(str(tmp_path / "a.ome.tiff")) is not None
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(ImageReadError):
        get_reader(str(bad))(str(bad))


def test_get_reader_accepts_zarr_stores_but_not_other_folders(tmp_path):
    create_labels(tmp_path / "labels.zarr", (20, 30), "YX")
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "labels.zarr")) is not None
    assert get_reader(str(tmp_path / "plain")) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.5, "x"])
def test_layer_data_never_gets_an_unusable_pixel_size(bad):
    """An ImageData made elsewhere than read_image (which already cleans calibration) with
    a NaN/inf/zero/negative pixel size: a negative scale would mirror the layer. The size
    is dropped with a warning, as the CLI and read_image drop it (Z: 1; X: Y's value)."""
    import dask.array as da

    from napari_unet._reader import image_layer_data
    from napari_unet.errors import CalibrationWarning
    from napari_unet.io import ImageData

    image = ImageData(data=da.zeros((3, 8, 8), dtype=np.uint8), axes="ZYX",
                      pixel_size=(bad, 0.5, bad), unit="um", source="made.tif")
    with pytest.warns(CalibrationWarning) as caught:
        ((_, kwargs, kind),) = image_layer_data(image, "made")
    assert sorted(str(w.message).split(" along ")[1][0] for w in caught) == ["X", "Z"]
    assert all("'made.tif'" in str(w.message) for w in caught)
    assert kind == "image" and kwargs["scale"] == [1.0, 0.5, 0.5]
    assert kwargs["units"] == ["um"] * 3


# --------------------------------------------------------------------------- through napari


def test_open_ome_zarr_labels_lazily_with_their_scale(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    store = create_labels(tmp_path / "cells_labels.zarr", (3, 40, 50), "ZYX",
                          pixel_size=(2.0, 0.5, 0.5), metadata={"kind": "labels", "model": "x"})
    store[1, 5:15, 5:25] = 9
    layers = viewer.open(tmp_path / "cells_labels.zarr", plugin=PLUGIN)
    assert len(layers) == 1 and layers[0]._type_string == "labels"
    assert layers[0].name == "cells_labels"
    np.testing.assert_allclose(layers[0].scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(layers[0].data), store[:])


def test_open_calibrated_stack(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = (np.arange(4 * 20 * 30) % 250).reshape(4, 20, 30).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer._type_string == "image" and layer.name == "stack"
    np.testing.assert_array_equal(layer.data, data)
    np.testing.assert_allclose(layer.scale, (1.5, 0.2, 0.2))
    assert [str(u) for u in layer.units] == ["micrometer"] * 3
    assert layer.metadata["napari_unet"]["axes"] == "ZYX"


def test_open_multichannel_rgb_and_ome(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).integers(0, 4000, (3, 2, 16, 18), dtype=np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    layers = viewer.open(path, plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["hyper ch0", "hyper ch1"]
    np.testing.assert_array_equal(layers[1].data, data[:, 1])
    assert all(layer.metadata["napari_unet"]["axes"] == "ZYX" for layer in layers)

    rgb = np.random.default_rng(1).integers(0, 255, (12, 14, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "colour.tif", rgb, photometric="rgb")
    (layer,) = viewer.open(tmp_path / "colour.tif", plugin=PLUGIN)
    assert layer.rgb and layer.data.shape == (12, 14, 3)

    ome = tmp_path / "cells.ome.tif"
    tifffile.imwrite(ome, np.zeros((10, 12), np.uint8), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})
    (layer,) = viewer.open(ome, plugin=PLUGIN)
    assert layer.name == "cells"
    np.testing.assert_allclose(layer.scale, (0.65, 0.65))


def test_save_labels_layer_roundtrip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((3, 20, 24), np.uint16)
    labels[1, 5:9, 5:9] = 300
    layer = viewer.add_labels(labels, name="seg", scale=(2.0, 0.5, 0.5), units="um",
                              metadata={"napari_unet": {"model": "nuclei · round 1",
                                                        "axes": "ZYX"}})
    out = tmp_path / "seg.tif"
    written = layer.save(str(out), plugin=PLUGIN)
    assert Path(written[0]) == out
    back = read_image(out)
    np.testing.assert_array_equal(back.data, labels)
    assert back.axes == "ZYX" and back.pixel_size == pytest.approx((2.0, 0.5, 0.5))
    assert back.unit == "um" and back.metadata["model"] == "nuclei · round 1"
    # Opening it again gives a Labels layer with the same scale.
    (again,) = viewer.open(out, plugin=PLUGIN)
    assert again._type_string == "labels"
    np.testing.assert_array_equal(again.data, labels)
    np.testing.assert_allclose(again.scale, (2.0, 0.5, 0.5))


def test_writer_is_atomic_and_labels_to_tiff_refuses_to_replace(tmp_path):
    out = tmp_path / "keep.tif"
    write_labels(out, np.ones((4, 4), np.uint8))
    before = out.read_bytes()
    with pytest.raises(InvalidLabelsError):
        write_labels_layer(str(out), -np.ones((4, 4), np.int32), {"scale": (1, 1)})
    assert out.read_bytes() == before  # a failed save leaves the old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]  # and no temp files
    from napari_unet.errors import OutputWriteError

    with pytest.raises(OutputWriteError):
        labels_to_tiff(out, np.zeros((4, 4), np.uint8))
    assert out.read_bytes() == before
    # The napari hook replaces (napari's save dialog has already asked).
    write_labels_layer(str(out), np.full((4, 4), 2, np.uint8), {"scale": (1, 1)})
    assert read_image(out).data.max() == 2


def test_labels_to_tiff_units_use_the_one_unit_table(tmp_path):
    from napari_unet.io.units import common_unit

    labels = np.ones((4, 4), np.uint8)
    out = labels_to_tiff(tmp_path / "nm.tif", labels, scale=(5.0, 5.0),
                         units=("nanometer", "nm"))  # pint's name and the symbol
    back = read_image(out)
    assert back.unit == "um" and back.pixel_size == pytest.approx((0.005, 0.005))
    assert common_unit(["micrometre", "µm"]) == "um"  # one unit, two spellings
    assert common_unit(["um", "nm"]) == "pixel"  # mixed units cannot be expressed
    assert common_unit(["furlong", "furlong"]) == "pixel"  # unknown


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "embryo_3d")
    assert layers[0].data.ndim == 3
    np.testing.assert_allclose(layers[0].scale, (2.18, 1.0, 1.0))
    for key in ("nuclei_fluo", "em_membrane"):
        (layer,) = viewer.open_sample(PLUGIN, key)
        assert layer.data.ndim == 2 and layer.name == key
