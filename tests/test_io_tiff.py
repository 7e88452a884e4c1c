"""TIFF (and PNG/JPEG) reading through the public API: axes, calibration, lazy reading, and
the damaged, truncated or oversized files refused before anything is allocated."""

import tracemalloc
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_unet.config import NormalizationConfig
from napari_unet.errors import ImageReadError
from napari_unet.io import read_image, write_labels
from napari_unet.io import tiff as tiff_reader
from napari_unet.normalize import channel_percentiles


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())

# ----------------------------------------------------------------------------- reading


def test_ome_tiff_axes_and_physical_size(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (3, 2, 10, 12), dtype=np.uint16)
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(
        path, data, ome=True,
        metadata={
            "axes": "ZCYX", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 250.0, "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 1.5, "PhysicalSizeZUnit": "µm",
        },
    )
    image = read_image(path)
    assert image.axes == "ZCYX"
    assert image.pixel_size == pytest.approx((1.5, 0.25, 0.25))
    assert image.unit == "um"
    assert image.metadata == {}
    np.testing.assert_array_equal(image.data, data)


def test_imagej_hyperstack_axes_and_escaped_micron_unit(tmp_path):
    data = np.zeros((2, 3, 2, 6, 7), np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "TZCYX", "spacing": 0.8, "unit": "\\u00B5m", "Info": "free text"},
    )
    image = read_image(path)
    assert image.axes == "TZCYX"
    assert image.pixel_size == pytest.approx((0.8, 0.2, 0.2))
    assert image.unit == "um"
    assert image.metadata == {}  # free text from other software is not ours


def test_plain_stack_rgb_and_centimetre_resolution(tmp_path):
    stack = np.zeros((4, 5, 6), np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    stack = read_image(tmp_path / "stack.tif")
    assert (stack.axes, stack.pixel_size, stack.unit) == ("ZYX", None, None)

    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    assert read_image(tmp_path / "rgb.tif").axes == "YXC"

    tifffile.imwrite(
        tmp_path / "cm.tif", np.zeros((5, 6), np.uint8), resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
    )
    assert read_image(tmp_path / "cm.tif").pixel_size == pytest.approx((0.5, 0.5))

    tifffile.imwrite(
        tmp_path / "dpi.tif", np.zeros((5, 6), np.uint8), resolution=(72, 72),
        resolutionunit="INCH",
    )
    assert read_image(tmp_path / "dpi.tif").pixel_size is None  # print DPI, not physical


def test_png_and_jpeg(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (9, 11), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    image = read_image(tmp_path / "g.png")
    assert image.axes == "YX"
    np.testing.assert_array_equal(image.data, gray)
    iio.imwrite(tmp_path / "c.jpg", np.zeros((9, 11, 3), np.uint8))
    assert read_image(tmp_path / "c.jpg").axes == "YXC"


def test_tiff_with_wrong_extension_is_read_as_tiff(tmp_path):
    labels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    tifffile.imwrite(tmp_path / "really_a_tiff.png", labels)
    image = read_image(tmp_path / "really_a_tiff.png")
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, labels)


def test_lazy_read_returns_dask(tmp_path, monkeypatch):
    data = np.random.default_rng(0).integers(0, 9, (4, 16, 16), dtype=np.uint8)
    path = write_labels(tmp_path / "l.tif", data)
    lazy = read_image(path, lazy=True)
    assert hasattr(lazy.data, "compute") and lazy.axes == "ZYX"
    np.testing.assert_array_equal(lazy.data.compute(), data)
    monkeypatch.setattr(tiff_reader, "LAZY_THRESHOLD_BYTES", 100)
    assert hasattr(read_image(path).data, "compute")  # large files go lazy by default


def _tiff_bytes(tmp_path: Path, **kwargs) -> bytes:
    path = tmp_path / "full.tif"
    data = np.random.default_rng(0).integers(0, 60000, (5, 64, 64), dtype=np.uint16)
    tifffile.imwrite(path, data, **kwargs)
    return path.read_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"compression": "zlib"}, {"imagej": True}, {"tile": (32, 32)}],
    ids=["plain", "zlib", "imagej", "tiled"],
)
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.97])
@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_tiff(tmp_path, kwargs, keep, lazy):
    full = _tiff_bytes(tmp_path, **kwargs)
    path = tmp_path / "cut.tif"
    path.write_bytes(full[: max(8, int(len(full) * keep))])
    with pytest.raises(ImageReadError, match="again"):
        read_image(path, lazy=lazy)


@pytest.mark.parametrize(
    ("content", "words"),
        [
        (b"", "empty"),
        (b"name,area\n1,2\n", "not a TIFF, PNG or JPEG"),
        (b"II*\x00garbage", "damaged"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "damaged"),
    ],
    ids=["empty", "csv", "bad-tiff-header", "bad-png"],
)
def test_not_an_image(tmp_path, content, words):
    path = tmp_path / "x.tif"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=words):
        read_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.tif")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


# ----------------------------------------------------------------------------- compressed TIFFs


def _pillow_tiff(path: Path, data: np.ndarray, compression: str) -> Path:
    """A TIFF compressed by Pillow (libtiff), so writing it never needs imagecodecs."""
    from PIL import Image

    Image.fromarray(data).save(path, compression=compression)
    return path


@pytest.mark.parametrize(("writer", "dtype", "lossless"), [
    ("tifffile-lzw", np.uint16, True),
    ("tifffile-jpeg", np.uint8, False),
    ("pillow-tiff_lzw", np.uint8, True),
    ("pillow-jpeg", np.uint8, False),
    ("pillow-group4", bool, True),
])
def test_ordinary_compressed_tiffs_are_read(tmp_path, writer, dtype, lossless):
    # Issue 10 item 11: LZW, JPEG, G4, ... TIFFs were reported as "damaged or incomplete"
    # because tifffile decodes them with imagecodecs, which was not a dependency.
    rng = np.random.default_rng(0)
    top = 2 if dtype is bool else 200
    data = (rng.integers(0, top, (48, 40)) if dtype is not bool
            else rng.integers(0, 2, (48, 40))).astype(dtype)
    path = tmp_path / f"{writer}.tif"
    library, compression = writer.split("-")
    if library == "pillow":
        _pillow_tiff(path, data, compression)
    else:
        pytest.importorskip("imagecodecs")  # writing these needs it; reading is the test
        tifffile.imwrite(path, data, compression=compression)
    image = read_image(path)
    assert image.axes == "YX" and image.data.shape == data.shape
    if lossless:
        np.testing.assert_array_equal(np.asarray(image.data).astype(data.dtype), data)
    else:
        assert np.abs(np.asarray(image.data, float) - data).mean() < 20


def test_imagecodecs_is_a_dependency():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    names = [d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
             for d in pyproject["project"]["dependencies"]]
    assert "imagecodecs" in names


def test_a_missing_codec_is_not_called_damage(tmp_path, monkeypatch):
    # Without imagecodecs (a broken install), say what is missing, not "damaged".
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.ones((8, 8), np.uint16))

    def missing(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", missing)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "imagecodecs" in str(info.value) and "pip install" in str(info.value)
    assert "damaged" not in str(info.value)


def _ome_header(**sizes: int) -> str:
    """OME-XML for one uint8 image (``Z=1000`` sets SizeZ) whose planes are all said to
    be in IFD 0 onwards."""
    size = {"X": 16, "Y": 16, "Z": 1, "C": 1, "T": 1, **sizes}
    planes = size["Z"] * size["C"] * size["T"]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" '
        + " ".join(f'Size{ax}="{n}"' for ax, n in size.items())
        + '><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        f'<TiffData IFD="0" PlaneCount="{planes}"/></Pixels></Image></OME>'
    )


def test_an_ome_header_declaring_more_planes_than_stored_is_refused(tmp_path):
    # SizeZ=1000 on a file holding one plane: tifffile fills the missing 999 planes with
    # zeros, and segmenting it would write a 1000-plane label file. Refuse before any work.
    path = tmp_path / "liar.ome.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), description=_ome_header(Z=1000),
                     metadata=None)
    for lazy in (False, True):
        with pytest.raises(ImageReadError,
                           match=r"(?s)liar\.ome\.tif.*1000 planes.*stores only 1\b"):
            read_image(path, lazy=lazy)


# ------------------------------------------- sizes declared in the file, checked first


def _patched(path: Path, data: np.ndarray, compression: str, **tags: int) -> Path:
    """A TIFF of ``data`` (one strip per plane) whose tags are then overwritten, e.g. to
    declare a plane far larger than the bytes stored."""
    tifffile.imwrite(path, data, rowsperstrip=data.shape[-2], metadata=None,
                     compression=compression)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for name, value in tags.items():
            tif.pages.first.tags[name].overwrite(value)
    return path


def _peak_bytes(fn) -> int:
    """Peak memory traced while ``fn()`` runs (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("lazy", [None, False, True])
def test_a_small_deflate_file_declaring_a_huge_plane_is_refused_before_allocating(
        tmp_path, lazy):
    # 1 KB of deflate data declared as one 100000 x 100000 strip: deflate decodes to at
    # most 1032 times its size, so the header is wrong; decoding would allocate 9.3 GiB.
    path = _patched(tmp_path / "bomb.tif", np.zeros((1000, 1000), np.uint8),
                    compression="zlib", ImageWidth=100_000, ImageLength=100_000,
                    RowsPerStrip=100_000)
    assert path.stat().st_size < 2000

    def read() -> None:
        with pytest.raises(ImageReadError, match=r"(?s)bomb\.tif.*100000 x 100000 uint8.*9\.3 GiB"
                                                 r".*deflate.*again"):
            read_image(path, lazy=lazy)

    assert _peak_bytes(read) < 20 << 20


@pytest.mark.parametrize("lazy", [None, False, True])
def test_a_compressed_piece_that_cannot_fit_in_memory_is_refused(tmp_path, lazy):
    # zstd has no bound on its ratio, so only memory decides: one strip declared
    # 4000000 x 4000000 (16 TB) must be decoded whole, which no machine can.
    path = _patched(tmp_path / "huge.tif", np.zeros((64, 64), np.uint8), compression="zstd",
                    ImageWidth=4_000_000, ImageLength=4_000_000, RowsPerStrip=4_000_000)
    with pytest.raises(ImageReadError) as info:
        read_image(path, lazy=lazy)
    how = "image whole" if lazy is False else "one compressed piece"
    for words in ("huge.tif", how, "4000000 x 4000000 uint8", "14.6 TiB of memory", "available",
                  "OME-Zarr"):
        assert words in str(info.value)


@pytest.mark.parametrize("sizes", [{"Z": 10_000_000}, {"X": 100_000, "Y": 100_000}],
                         ids=["planes", "plane-size"])
def test_an_ome_header_declaring_millions_of_planes_is_refused_before_allocating(
        tmp_path, sizes):
    # tifffile lists every declared plane (80 MB for 10^7 planes; SizeX x SizeY over the
    # page's 16 x 16 pixels counts as planes too); refuse from the header, before that.
    path = tmp_path / "many.ome.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), description=_ome_header(**sizes),
                     metadata=None)

    def read() -> None:
        with pytest.raises(ImageReadError, match=r"(?s)many\.ome\.tif.*declares \d{7,} planes"
                                                 r".*stores only 1\b"):
            read_image(path)

    assert _peak_bytes(read) < 20 << 20


def test_ome_images_are_measured_by_their_own_pages(tmp_path):
    # A small first image and a larger compressed second one: the second image's planes
    # are counted in its own 256 x 256 pages, not in the first image's 8 x 8 ones.
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(np.ones((4, 8, 8), np.uint8), metadata={"axes": "ZYX"})
        tif.write(np.zeros((3, 256, 256), np.uint16), metadata={"axes": "TYX"},
                  compression="zlib")
    assert read_image(path).data.shape == (4, 8, 8)

def test_a_one_strip_plane_is_read_lazily_in_pieces(tmp_path):
    # ImageJ stores a plane as one strip; tifffile decodes a strip whole, so every block
    # of a lazily read 20000 x 20000 plane cost the plane's 400 MB (a 1.6 GB plane ended
    # in MemoryError). Uncompressed, it is now read through a memory map.
    path = tmp_path / "one_strip.tif"
    plane = tifffile.memmap(path, shape=(20_000, 20_000), dtype=np.uint8, imagej=True)
    plane[10_000:10_100, 5_000:5_100] = 7
    plane.flush()
    del plane
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.rowsperstrip >= 20_000  # one strip
    image = read_image(path, lazy=True)

    def block() -> None:
        values = np.asarray(image.data[9_990:10_500, 4_990:5_500])
        assert values.sum() == 7 * 100 * 100 and values[0, 0] == 0

    def percentiles() -> None:
        assert channel_percentiles(image.data[None], NormalizationConfig(), 0).shape == (1, 2)

    assert _peak_bytes(block) < 20 << 20
    assert _peak_bytes(percentiles) < 100 << 20  # the 2000 x 2000 float64 sample, not 400 MB


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((3, 4, 20, 30), {"imagej": True, "metadata": {"axes": "TZYX"}}),
        ((3, 20, 30, 3), {"photometric": "rgb"}),
        ((2, 3, 20, 30), {"photometric": "rgb", "planarconfig": "separate"}),
        ((4, 20, 30), {"photometric": "minisblack", "byteorder": ">"}),
        ((2, 3, 20, 30), {"ome": True, "metadata": {"axes": "ZCYX"}}),
        ((4, 20, 30), {"photometric": "minisblack", "compression": "zlib"}),
    ],
    ids=["imagej", "rgb", "planar", "big-endian", "ome", "zlib"],
)
def test_lazy_reads_equal_eager_ones(tmp_path, shape, kwargs):
    data = np.random.default_rng(1).integers(0, 60_000, shape).astype(np.uint16)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, **kwargs)
    eager, lazy = read_image(path, lazy=False), read_image(path, lazy=True)
    assert (lazy.axes, lazy.data.dtype) == (eager.axes, eager.data.dtype)
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    np.testing.assert_array_equal(lazy.data[..., 5:17, 3:9], eager.data[..., 5:17, 3:9])


def test_lazy_read_of_planes_stored_apart(tmp_path):
    # Pages written one by one, each followed by the next IFD: equally spaced, not adjacent.
    path = tmp_path / "apart.tif"
    with tifffile.TiffWriter(path) as tif:
        for value in range(4):
            tif.write(np.full((20, 30), value, np.uint16), contiguous=False, metadata=None)
    lazy = read_image(path, lazy=True).data
    np.testing.assert_array_equal(lazy[:, 0, 0], np.arange(4))
    np.testing.assert_array_equal(lazy.compute(), read_image(path, lazy=False).data)
