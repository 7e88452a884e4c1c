"""The bad-input catalogue (issues 5 and 10), tested through the public interfaces.

Every bad input must raise a specific :class:`~napari_unet.errors.NapariUnetError`
subclass whose message names the problem and the fix, and through the CLI exit with
status 2, one line on stderr and no traceback. Inputs that are odd but usable must work.

Where each catalogue item is tested (``here`` = this file):

Images given to ``segment()``
    empty (0-sized) ............ here (+ tests/test_segment.py::test_empty_image_is_refused)
    1x1, 3x5 (below the network minimum: padded, works), 1xN ...... here
    constant (all-zero labels, no error) ... here (+ test_segment.py::test_constant_image_gives_no_objects)
    all-NaN, some inf .......... here (API and CLI)
    bool, int32, int64, float64 (work); complex, object (refused) ... here
    RGB / RGBA with a 1-channel model (gray) ... here (+ test_segment.py::test_rgba_png_with_a_gray_model_is_segmented_as_gray)
    CYX / YXC with a 2-channel model (explicit and guessed axes) ... here
    6D, repeated axis letter, 5D the model cannot take ... here (+ test_axes.py::test_guess_refuses_six_dimensions)
    property test: random small 2D/3D arrays never raise a foreign exception ... here
Files (``read_image`` and ``napari-unet segment``)
    truncated TIFF ............. CLI here; read_image in tests/test_io_tiff.py::test_truncated_tiff
    TIFF named .png (works) .... here; read_image also test_io_tiff.py::test_tiff_with_wrong_extension_is_read_as_tiff
    LZW / JPEG / G4 compressed TIFF (works: imagecodecs) ... here (CLI, napari reader);
                                 test_io_tiff.py::test_ordinary_compressed_tiffs_are_read,
                                 ::test_a_missing_codec_is_not_called_damage
    non-image file ............. CLI here; read_image in test_io_tiff.py::test_not_an_image
    missing / folder / unreadable path ... here; read_image also test_io_tiff.py::test_missing_file_and_folder
    read-only output folder .... here (chmod, skipped as root; plus a simulated EACCES that always runs);
                                 write_labels in test_io_labels.py::test_read_only_folder
    full disk .................. here (CLI: old file byte-identical, no temp file);
                                 write_labels in test_io_labels.py::test_full_disk_message_names_folder_and_fix
Existing outputs (here; atomic_folder also in tests/test_io_atomic.py)
    a zarr or TIFF output written meanwhile by another run (kept, exit 2) ... test_an_output_written_meanwhile_by_another_run_is_kept
    --overwrite with an ordinary folder under the output's name (kept) ... test_overwrite_never_deletes_an_ordinary_folder
    an output that is one of the inputs, via a link, or a store holding one (kept, even with
                                 --overwrite) ... test_overwrite_never_replaces_an_input
Calibration (here; read before any work, never refused: what cannot be read is dropped
with a CalibrationWarning, one "napari-unet: warning:" line in the CLI)
    unit synonyms (pixels, micrometers, Microns, angstrom, nanometers; OME Å) ... test_unit_synonyms_are_read,
                                 test_an_angstrom_ome_tiff_is_read_in_micrometres
    unknown unit (furlong, sec, A) ... test_an_unknown_unit_drops_the_calibration_with_a_warning
    NaN / inf / negative / text spacing (ImageJ Z, OME X, NGFF scale) ... test_an_unusable_z_spacing_is_dropped_with_a_warning,
                                 test_an_unusable_ome_pixel_size_is_dropped_with_a_warning (+ napari reader),
                                 test_zarr_calibration_is_read_or_dropped_with_a_warning
    all of these through the CLI, TIFF and zarr output (warning before the work, valid
                                 zarr.json) ... test_calibration_problems_through_the_cli
    NaN / inf / 0 / negative pixel size given to create_labels ... test_zarr_labels_never_get_an_invalid_pixel_size
Models (``load_model``)
    corrupt file ............... tests/test_model.py::test_truncated_file, ::test_random_bytes; CLI here
    newer format version ....... tests/test_model.py::test_newer_format_version_asks_to_upgrade; CLI here
    3-channel model, 1-channel image ... tests/test_model.py::test_channel_mismatch_is_reported_by_segment; CLI here
    pickle that would run code . tests/test_model.py::test_malicious_pickles_are_refused_without_running_them;
                                 load_model and CLI here (marker file never created)
    safetensors header length of 128 mod 256 (first byte 0x80, not a pickle: loads)
                                 ... tests/test_model.py::test_a_header_length_of_128_mod_256_is_not_taken_for_a_pickle,
                                 ::test_torch_files_are_recognised_by_their_signature
Session folders (Open session; tests/sessions/test_restore.py unless noted)
    image path naming a script with napari's reader (never run) ... tests/test_widgets.py::
                                 test_open_session_never_runs_a_script_the_session_names;
                                 ::test_a_session_never_hands_a_script_or_other_file_to_a_viewer
    image path to a non-image file, a folder or a FIFO (not opened) ... same test
    reader plugin named by the file (ignored: napari-unet's reader) ...
                                 ::test_a_session_image_opens_only_with_this_plugins_reader
    image outside the session folder, also via a link (asked first) ...
                                 ::test_an_image_outside_the_session_folder_is_opened_only_when_the_user_agrees
    sample of another plugin (not opened) ... ::test_only_this_plugins_samples_are_opened
    labels/model file linked from outside the folder (refused) ...
                                 tests/sessions/test_folder.py::
                                 test_data_files_linked_from_outside_the_folder_are_refused
    user files named like a save's data files (never removed by a save) ...
                                 tests/sessions/test_folder.py::
                                 test_saving_removes_only_files_the_previous_save_wrote
Hangs (here)
    FIFO given as an image (read_image, napari reader, CLI) ... test_a_fifo_given_as_an_image_is_refused_without_waiting
    tile overlap >= tile size (API, CLI, model's tile with --overlap) ... test_tile_overlap_must_be_below_the_tile_size
    model file with such a tiling, or tile size 0 ... test_a_model_file_whose_overlap_is_not_below_its_tile_size_is_refused
    --time-budget 0 / nan / inf / -5 (train, fine-tune) ... test_time_budget_must_be_a_positive_finite_number
Labels given to ``fine_tune()``
    negative ids, ids > 65535 (work), float labels (refused, even whole-numbered), wrong shape
                                 ... here (API and CLI; + tests/test_finetune.py::test_wrong_label_shapes_and_types)
Memory driven by a number in a file (refused or bounded before allocating)
    TIFF declaring a 100000^2 plane in 1 KB of deflate ... tests/test_io_tiff.py::
                                 test_a_small_deflate_file_declaring_a_huge_plane_is_refused_before_allocating
    compressed piece (one strip) that cannot fit ... ::test_a_compressed_piece_that_cannot_fit_in_memory_is_refused
    OME header declaring millions of planes ... ::test_an_ome_header_declaring_millions_of_planes_is_refused_before_allocating
    ImageJ one-strip planes read in bounded pieces ... ::test_a_one_strip_plane_is_read_lazily_in_pieces
    session .npz expanding to gigabytes, headers larger than their zip entries, arrays beyond
                                 the memory available ... tests/sessions/test_arrays.py
    model config with base 256 in a small file (refused before a layer is built) ...
                                 tests/test_model.py::test_a_small_file_describing_a_huge_network_is_refused_before_building_it;
                                 tests/test_config.py::test_a_huge_network_is_refused_before_it_is_built
    100000^2 zarr in 64^2 chunks (read in multiples of them), stores too large to read in
                                 pieces ... tests/test_io_zarr.py::test_millions_of_small_chunks_are_read_in_whole_multiples_of_them,
                                 ::test_a_store_too_large_to_read_in_pieces_is_refused_before_any_work
Clear errors for what files and options say
    OME-Zarr metadata without axes/datasets, dict for list, paths outside the store ...
                                 tests/test_io_zarr.py::test_ome_zarr_metadata_that_cannot_describe_the_image_is_refused_naming_the_key
    corrupt zarr chunk (named when read; absent chunks are the fill value) ...
                                 tests/test_io_zarr.py::test_a_damaged_chunk_is_named_when_it_is_read_and_an_absent_one_reads_as_zero,
                                 ::test_a_damaged_chunk_through_the_cli_is_one_error_line
    model configs: depth 0/-1, tile 0, percentiles out of range or reversed, instance head
                                 with 1 output, unknown task/up-sampling, NaN thresholds, class names
                                 that do not match, NaN/int8/misshapen weights ... tests/test_model.py::
                                 test_model_files_whose_config_cannot_work_are_refused,
                                 ::test_tensors_that_are_not_the_configs_weights_are_refused;
                                 tests/test_config.py::test_the_library_refuses_configs_that_cannot_work
    property test: any config in a model file loads and predicts or is a ModelFileError ...
                                 tests/test_model.py::test_any_config_in_a_model_file_loads_and_predicts_or_is_refused
    CLI numbers (--lr nan, --in-channels -3, --scheduler, thresholds, --val-fraction 2,
                                 negative patience, ...) ... test_option_values_outside_their_range_are_refused;
                                 the library the same ... test_the_library_refuses_the_same_values
    session.json with NaN, Infinity, 1e400, deep nesting, oversized ... tests/sessions/test_index.py
    property test: any mutation of a saved session opens or is a SessionError, the open
                                 session untouched ... tests/sessions/test_restore.py (hypothesis)
    napari reader given NaN/inf/0/negative pixel sizes (dropped, never mirrored) ...
                                 tests/test_reader_writer.py::test_layer_data_never_gets_an_unusable_pixel_size
Closing while a job runs (tests/test_widgets.py)
    napari closed during a fine-tuning round (was exit 134) ...
                                 test_closing_napari_during_a_round_cancels_it_and_delivers_nothing
    the Fine-tune panel closed during a round (was: training on, Segment disabled) ...
                                 test_closing_the_finetune_panel_cancels_its_round
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _data import small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.torch import load_file, save_file

import napari_unet
import napari_unet.batch
import napari_unet.errors
import napari_unet.io
from napari_unet import Correction, fine_tune, load_model, segment
from napari_unet.cli import main
from napari_unet.errors import (
    ImageReadError,
    InvalidImageError,
    InvalidLabelsError,
    InvalidSettingError,
    ModelFileError,
    ModelMismatchError,
    NapariUnetError,
    OutputWriteError,
)
from napari_unet.io import read_image, write_labels

STEPS = dict(steps=1, time_budget=None)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return small_model().save(tmp_path_factory.mktemp("models") / "small.safetensors")


def _image(shape=(48, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)


def _cli_error(capsys, argv) -> str:
    """Run the CLI, expect exit 2 with one line and no traceback; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-unet: error:"), err
    return lines[0]


def _segment_cli(capsys, image, model_path, out, *extra) -> str:
    return _cli_error(capsys, ["segment", image, "--model", model_path, "--out", out,
                               "--device", "cpu", *extra])


def _ok_labels(labels: np.ndarray, shape) -> None:
    assert labels.shape == tuple(shape)
    assert labels.dtype.kind == "u"


# --------------------------------------------------------------------------- images: API


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (2, 0, 8)])
def test_empty_image(model, shape) -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        segment(np.zeros(shape, np.uint8), model, device="cpu")


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (1, 40), (40, 1), (2, 3, 5)])
def test_planes_below_the_network_minimum_are_padded(model, shape) -> None:
    _ok_labels(segment(_image(shape), model, device="cpu"), shape)


def test_constant_image_gives_all_zero_labels(model) -> None:
    for value in (0, 7, 255):
        labels = segment(np.full((40, 40), value, np.uint8), model, device="cpu")
        _ok_labels(labels, (40, 40))
        assert not labels.any()


def test_all_nan_image(model) -> None:
    with pytest.raises(InvalidImageError, match="no finite values") as info:
        segment(np.full((32, 32), np.nan, np.float32), model, device="cpu")
    assert "nan_to_num" in str(info.value)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_some_non_finite_values(model, bad) -> None:
    image = np.random.default_rng(0).random((32, 32))
    image[3, 4] = bad
    with pytest.raises(InvalidImageError, match="nan_to_num"):
        segment(image, model, device="cpu")


@pytest.mark.parametrize("image", [
    np.array([[-3e38, 3e38], [0, 1]], np.float32),
    np.array([[np.finfo(np.float64).min, np.finfo(np.float64).max], [0, 1]]),
], ids=["float32", "float64"])
def test_finite_values_too_wide_to_normalise(model, image) -> None:
    # These used to be reported as "contains NaN or infinite values", which they do not.
    with pytest.raises(InvalidImageError, match="too large a range") as info:
        segment(image, model, device="cpu")
    assert "rescale" in str(info.value) and "NaN" not in str(info.value)


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int32, np.int64, np.uint32, np.uint64,
                                   np.float16, np.float64])
def test_other_numeric_dtypes_work(model, dtype) -> None:
    image = _image((32, 32)).astype(np.int64) - (0 if np.dtype(dtype).kind in "ub" else 100)
    image = (image > 128) if dtype is bool else image.astype(dtype)
    _ok_labels(segment(image, model, device="cpu"), (32, 32))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3"])
def test_non_numeric_dtypes_are_refused(model, dtype) -> None:
    image = np.ones((16, 16), dtype=dtype)
    with pytest.raises(InvalidImageError, match="cannot be segmented") as info:
        segment(image, model, device="cpu")
    assert "convert" in str(info.value)


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_and_rgba_with_a_gray_model(model, channels) -> None:
    image = _image((40, 36, channels))
    _ok_labels(segment(image, model, device="cpu"), (40, 36))
    _ok_labels(segment(image, model, axes="YXC", device="cpu"), (40, 36))


@pytest.mark.parametrize("axes", ["CYX", "YXC"])
def test_two_channel_model_channels_first_and_last(axes) -> None:
    two = small_model(in_channels=2)
    image = _image((2, 40, 36) if axes == "CYX" else (40, 36, 2))
    _ok_labels(segment(image, two, axes=axes, device="cpu"), (40, 36))
    _ok_labels(segment(image, two, device="cpu"), (40, 36))  # guessed from the model


def test_two_channel_model_refuses_a_gray_image() -> None:
    with pytest.raises(ModelMismatchError, match="2 channel") as info:
        segment(_image((40, 36)), small_model(in_channels=2), device="cpu")
    assert "all its channels" in str(info.value)


def test_six_dimensions_need_axes(model) -> None:
    with pytest.raises(InvalidImageError, match="pass axes explicitly"):
        segment(np.zeros((2, 2, 2, 2, 8, 8), np.uint8), model, device="cpu")


@pytest.mark.parametrize("axes", ["YYX", "ZZX", "ZYQ", "TZX"])
def test_invalid_axes_letters(model, axes) -> None:
    with pytest.raises(InvalidImageError, match="at most once"):
        segment(np.zeros((2, 8, 8), np.uint8), model, axes=axes, device="cpu")


def test_axes_of_the_wrong_length(model) -> None:
    with pytest.raises(InvalidImageError, match="one letter per dimension"):
        segment(np.zeros((2, 8, 8), np.uint8), model, axes="TZCYX", device="cpu")


def test_five_dimensions_the_model_cannot_take(model) -> None:
    image = np.zeros((2, 2, 2, 8, 8), np.uint8)  # TZCYX with 2 channels, 1-channel model
    with pytest.raises(ModelMismatchError, match="1 channel"):
        segment(image, model, axes="TZCYX", device="cpu")
    _ok_labels(segment(image[:, :, :1], model, axes="TZCYX", device="cpu"), (2, 2, 8, 8))


# --------------------------------------------------------------------------- images: CLI


def _write(path: Path, data: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, data, **kwargs)
    return path


@pytest.mark.parametrize(("data", "extra", "words"), [
    (np.full((32, 32), np.nan, np.float32), [], "nan_to_num"),
    (np.where(np.eye(32) > 0, np.inf, 1.0).astype(np.float32), [], "nan_to_num"),
    (np.ones((32, 32), np.complex64), [], "cannot be segmented"),
    (np.zeros((2, 32, 32), np.uint8), ["--axes", "YYX"], "at most once"),
    (np.zeros((2, 32, 32), np.uint8), ["--axes", "TZCYX"], "one letter per dimension"),
    (np.zeros((2, 2, 32, 32), np.uint8), ["--axes", "ZCYX"], "1 channel"),
    (np.array([[-3e38, 3e38], [0, 1]], np.float32), [], "too large a range"),
    (np.zeros((2, 2, 2, 2, 8, 8), np.uint8), [], "cannot be mapped"),
], ids=["nan", "inf", "complex", "repeated-axis", "axes-length", "channels", "overflow", "6d"])
def test_bad_images_through_the_cli(capsys, tmp_path, model_file, data, extra, words) -> None:
    path = _write(tmp_path / "in.tif", data)
    line = _segment_cli(capsys, path, model_file, tmp_path / "out", *extra)
    assert words in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_constant_and_tiny_images_through_the_cli(capsys, tmp_path, model_file) -> None:
    _write(tmp_path / "flat.tif", np.full((40, 40), 9, np.uint16))
    _write(tmp_path / "tiny.tif", _image((3, 5)))
    code = main(["segment", str(tmp_path / "flat.tif"), str(tmp_path / "tiny.tif"),
                 "--model", str(model_file), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert not tifffile.imread(tmp_path / "out" / "flat_labels.tif").any()
    assert tifffile.imread(tmp_path / "out" / "tiny_labels.tif").shape == (3, 5)


# --------------------------------------------------------------------------- files


@pytest.fixture
def tiff_bytes(tmp_path) -> bytes:
    return _write(tmp_path / "full.tif", _image((64, 64))).read_bytes()


def test_truncated_tiff_through_the_cli(capsys, tmp_path, model_file, tiff_bytes) -> None:
    cut = tmp_path / "cut.tif"
    cut.write_bytes(tiff_bytes[: len(tiff_bytes) // 2])
    with pytest.raises(ImageReadError, match="again"):
        read_image(cut)
    line = _segment_cli(capsys, cut, model_file, tmp_path / "out")
    assert "truncated" in line and "again" in line


def test_tiff_named_png_works(capsys, tmp_path, model_file, tiff_bytes) -> None:
    fake = tmp_path / "picture.png"
    fake.write_bytes(tiff_bytes)
    assert read_image(fake).data.shape == (64, 64)
    code = main(["segment", str(fake), "--model", str(model_file), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(tmp_path / "o" / "picture_labels.tif").shape == (64, 64)


def test_tiff_with_no_pixels(capsys, tmp_path, model_file) -> None:
    # Used to be reported as a truncated file ("image data needs 272 bytes").
    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((0, 0), np.uint8))
    with pytest.raises(ImageReadError, match="empty image"):
        read_image(path)
    line = _segment_cli(capsys, path, model_file, tmp_path / "out")
    assert "empty image" in line and "truncated" not in line


@pytest.mark.parametrize("compression", ["lzw", "jpeg"])
def test_compressed_tiffs_through_the_cli_and_the_napari_reader(capsys, tmp_path, model_file,
                                                                 compression) -> None:
    # Issue 10 item 11: were "damaged or incomplete" without imagecodecs (now a dependency).
    path = _write(tmp_path / f"{compression}.tif", _image((64, 64)), compression=compression)
    from napari_unet._reader import get_reader

    layers = get_reader(str(path))(str(path))
    assert np.asarray(layers[0][0]).shape == (64, 64)
    code = main(["segment", str(path), "--model", str(model_file), "--out",
                 str(tmp_path / "o"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(tmp_path / "o" / f"{compression}_labels.tif").shape == (64, 64)


@pytest.mark.parametrize(("content", "words"), [
    (b"name,area\n1,2\n", "not a TIFF, PNG or JPEG"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "damaged"),
], ids=["csv", "zero-bytes", "broken-png"])
def test_non_image_file_through_the_cli(capsys, tmp_path, model_file, content, words) -> None:
    path = tmp_path / "data.tif"
    path.write_bytes(content)
    assert words in _segment_cli(capsys, path, model_file, tmp_path / "out")


def test_missing_path_and_folder_through_the_cli(capsys, tmp_path, model_file) -> None:
    assert "does not exist" in _segment_cli(capsys, tmp_path / "nope.tif", model_file, tmp_path / "o")
    (tmp_path / "folder").mkdir()
    assert "is a folder" in _segment_cli(capsys, tmp_path / "folder", model_file, tmp_path / "o")


def test_unreadable_file(capsys, tmp_path, model_file, tiff_bytes) -> None:
    path = tmp_path / "secret.tif"
    path.write_bytes(tiff_bytes)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod cannot make a file unreadable here")
        with pytest.raises(ImageReadError, match="permission denied"):
            read_image(path)
        assert "permission" in _segment_cli(capsys, path, model_file, tmp_path / "o")
    finally:
        path.chmod(0o600)


def test_read_only_output_folder(capsys, tmp_path, model_file, tiff_bytes) -> None:
    (tmp_path / "in.tif").write_bytes(tiff_bytes)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod cannot make a folder read-only here")
        line = _segment_cli(capsys, tmp_path / "in.tif", model_file, out)
        assert "read-only" in line and str(out) in line
        assert not any(out.iterdir())
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize(("code", "words"), [
    (errno.EACCES, "read-only"), (errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
], ids=["permission", "full-disk", "read-only-fs"])
def test_write_failure_keeps_the_previous_file(capsys, tmp_path, model_file, tiff_bytes,
                                               monkeypatch, code, words) -> None:
    (tmp_path / "in.tif").write_bytes(tiff_bytes)
    out = tmp_path / "out"
    previous = write_labels(out / "in_labels.tif", np.full((64, 64), 3, np.uint8))
    before = previous.read_bytes()

    def failing_writer(file, *args, **kwargs):
        Path(file).write_bytes(b"II*\x00" + b"\x00" * 64)  # a partial file, then the error
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tifffile, "imwrite", failing_writer)
    with pytest.raises(OutputWriteError, match=words):
        write_labels(previous, np.ones((64, 64), np.uint8), overwrite=True)
    line = _segment_cli(capsys, tmp_path / "in.tif", model_file, out, "--overwrite")
    assert words in line and str(out) in line
    assert previous.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["in_labels.tif"]  # no temp file left


# --------------------------------------------------------------------------- existing outputs


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_an_output_written_meanwhile_by_another_run_is_kept(capsys, tmp_path, model_file,
                                                            monkeypatch, fmt) -> None:
    # Issue 10 item 4a: two runs writing the same zarr both exited 0, the first result gone.
    image = _write(tmp_path / "img.tif", _image((48, 48)))
    target = tmp_path / "out" / ("img_labels.zarr" if fmt == "zarr" else "img_labels.tif")
    real_segment = napari_unet.batch.segment

    def other_run_finishes_first(*args, **kwargs):
        if fmt == "zarr":
            target.mkdir(parents=True)
            (target / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
            (target / "theirs").write_text("first result")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("first result")
        return real_segment(*args, **kwargs)

    monkeypatch.setattr(napari_unet.batch, "segment", other_run_finishes_first)
    line = _segment_cli(capsys, image, model_file, tmp_path / "out", "--format", fmt)
    assert "--overwrite" in line and "left as it is" in line
    assert (target / "theirs" if fmt == "zarr" else target).read_text() == "first result"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_overwrite_never_deletes_an_ordinary_folder(capsys, tmp_path, model_file,
                                                     monkeypatch) -> None:
    # Issue 10 item 4b: --overwrite deleted a same-named folder that is not a zarr store.
    image = _write(tmp_path / "img.tif", _image((48, 48)))
    folder = tmp_path / "out" / "img_labels.zarr"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (tmp_path / "out" / "img_labels.tif").mkdir()
    monkeypatch.setattr(napari_unet.batch, "load_model", _no_work)
    for fmt, words in (("zarr", "not a zarr store"), ("tiff", "is a folder")):
        line = _segment_cli(capsys, image, model_file, tmp_path / "out", "--format", fmt,
                            "--overwrite")
        assert words in line
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "out" / "img_labels.tif").is_dir()


def _no_work(*args, **kwargs):
    raise AssertionError("the refusal must come before any work")


@pytest.mark.parametrize("fmt", ["tiff", "zarr"])
def test_overwrite_never_replaces_an_input(capsys, tmp_path, model_file, monkeypatch, fmt) -> None:
    # Issue 10 item 4c: `segment d/*.tif --out d --overwrite` overwrote d/img_labels.tif,
    # which was itself one of the inputs.
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "img.tif", _image((48, 48)))
    if fmt == "tiff":
        mine = _write(d / "img_labels.tif", _image((48, 48), seed=1))
    else:
        mine = d / "img_labels.zarr"
        napari_unet.io.create_labels(mine, (48, 48), "YX")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} if mine.is_dir() \
        else mine.read_bytes()
    monkeypatch.setattr(napari_unet.batch, "load_model", _no_work)
    line = _cli_error(capsys, ["segment", d / "img.tif", mine, "--model", model_file,
                               "--out", d, "--device", "cpu", "--format", fmt, "--overwrite"])
    assert "one of the inputs" in line
    after = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} if mine.is_dir() \
        else mine.read_bytes()
    assert after == before
    assert sorted(p.name for p in d.iterdir()) == sorted(["img.tif", mine.name])
    # Also when the input is reached by another path (a link) and for the overlay.
    (tmp_path / "link").symlink_to(d)
    _write(d / "img_overlay.png", _image((8, 8)))
    line = _cli_error(capsys, ["segment", d / "img.tif", tmp_path / "link" / "img_overlay.png",
                               "--model", model_file, "--out", d, "--device", "cpu",
                               "--overlay", "--overwrite", "--format", fmt])
    assert "one of the inputs" in line
    if fmt == "zarr":  # an input inside the store that would be replaced
        line = _cli_error(capsys, ["segment", d / "img.tif", mine / "0", "--model", model_file,
                                   "--out", d, "--device", "cpu", "--format", fmt,
                                   "--overwrite"])
        assert "one of the inputs" in line and mine.is_dir()


# --------------------------------------------------------------------------- calibration


def _imagej(path: Path, unit: str = "um", spacing=0.7, resolution=(2.0, 2.0)) -> Path:
    return _write(path, _image((3, 40, 40)), imagej=True, resolution=resolution,
                  metadata={"unit": unit, "spacing": spacing, "axes": "ZYX"})


def _ome(path: Path, x: str, unit: str = "µm") -> Path:
    """An OME-TIFF whose PhysicalSizeX is ``x`` (Y is 0.5 of the same unit)."""
    xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/'
           'Schemas/OME/2016-06"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT"'
           ' Type="uint8" SizeX="40" SizeY="40" SizeZ="3" SizeC="1" SizeT="1" '
           f'PhysicalSizeX="{x}" PhysicalSizeXUnit="{unit}" PhysicalSizeY="0.5" '
           f'PhysicalSizeYUnit="{unit}"><TiffData/></Pixels></Image></OME>')
    return _write(path, _image((3, 40, 40)), description=xml.encode(), metadata=None,
                  photometric="minisblack")


@pytest.mark.parametrize(("unit", "size", "read_unit"), [
    ("pixels", (0.7, 0.5, 0.5), "pixel"),
    ("micrometers", (0.7, 0.5, 0.5), "um"),
    ("Microns", (0.7, 0.5, 0.5), "um"),
    ("angstrom", (0.7e-4, 0.5e-4, 0.5e-4), "um"),
    ("nanometers", (0.7e-3, 0.5e-3, 0.5e-3), "um"),
])
def test_unit_synonyms_are_read(tmp_path, unit, size, read_unit) -> None:
    # Issue 10 item 10: refused only after the whole segmentation ran.
    image = read_image(_imagej(tmp_path / "in.tif", unit))
    assert image.unit == read_unit
    assert image.pixel_size == pytest.approx(size)


@pytest.mark.parametrize("unit", ["furlong", "sec", "A"])
def test_an_unknown_unit_drops_the_calibration_with_a_warning(tmp_path, unit) -> None:
    with pytest.warns(napari_unet.errors.CalibrationWarning, match=repr(unit)):
        image = read_image(_imagej(tmp_path / "in.tif", unit))
    assert image.pixel_size is None and image.unit is None


@pytest.mark.parametrize("spacing", [float("nan"), float("inf"), -2.0, "abc"])
def test_an_unusable_z_spacing_is_dropped_with_a_warning(tmp_path, spacing) -> None:
    with pytest.warns(napari_unet.errors.CalibrationWarning, match="Z"):
        image = read_image(_imagej(tmp_path / "in.tif", "um", spacing))
    assert image.pixel_size == (1.0, 0.5, 0.5) and image.unit == "um"  # Z as if not given


@pytest.mark.parametrize("x", ["NaN", "-0.5", "INF", "abc", "0"])
def test_an_unusable_ome_pixel_size_is_dropped_with_a_warning(tmp_path, x) -> None:
    with pytest.warns(napari_unet.errors.CalibrationWarning, match="X"):
        image = read_image(_ome(tmp_path / "in.ome.tif", x))
    assert image.pixel_size == (1.0, 0.5, 0.5)  # X as if not given: Y's value
    from napari_unet._reader import read_layers

    with pytest.warns(napari_unet.errors.CalibrationWarning):
        scale = read_layers(str(tmp_path / "in.ome.tif"))[0][1]["scale"]
    assert all(math.isfinite(v) and v > 0 for v in scale)  # never a mirrored layer


def test_an_angstrom_ome_tiff_is_read_in_micrometres(tmp_path) -> None:
    image = read_image(_ome(tmp_path / "in.ome.tif", "5", "Å"))
    assert image.unit == "um" and image.pixel_size == pytest.approx((1.0, 5e-5, 5e-4))


@pytest.mark.parametrize("fmt", ["tiff", "zarr"])
@pytest.mark.parametrize(("unit", "spacing", "warns"), [
    ("pixels", 0.7, False), ("micrometers", 0.7, False), ("angstrom", 0.7, False),
    ("um", float("nan"), True), ("um", -2.0, True), ("furlong", 0.7, True),
], ids=["pixels", "micrometers", "angstrom", "nan", "negative", "unknown"])
def test_calibration_problems_through_the_cli(capsys, tmp_path, model_file, monkeypatch, fmt,
                                              unit, spacing, warns) -> None:
    path = _imagej(tmp_path / "in.tif", unit, spacing)
    seen = []
    real_segment = napari_unet.batch.segment

    def record(*args, **kwargs):  # what stderr holds when the work starts
        seen.append(capsys.readouterr().err)
        return real_segment(*args, **kwargs)

    monkeypatch.setattr(napari_unet.batch, "segment", record)
    code = main(["segment", str(path), "--model", str(model_file), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--format", fmt])
    err = "".join(seen) + capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    if warns:
        assert seen[0].startswith("napari-unet: warning:"), seen
        assert len(seen[0].strip().splitlines()) == 1
    else:
        assert not err.strip()
    if fmt == "zarr":
        text = (tmp_path / "out" / "in_labels.zarr" / "zarr.json").read_text()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in zarr.json"))
        labels = read_image(tmp_path / "out" / "in_labels.zarr")
    else:
        labels = read_image(tmp_path / "out" / "in_labels.tif")
    assert labels.data.shape == (3, 40, 40)
    if labels.pixel_size is not None:
        assert all(math.isfinite(v) and v > 0 for v in labels.pixel_size)


def _ngff(path: Path, scale, unit) -> Path:
    napari_unet.io.create_labels(path, (2, 8, 8), "ZYX", pixel_size=(2.0, 0.5, 0.5))
    meta = json.loads((path / "zarr.json").read_text())
    multiscale = meta["attributes"]["ome"]["multiscales"][0]
    for axis in multiscale["axes"]:
        axis["unit"] = unit
    multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] = scale
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def test_zarr_calibration_is_read_or_dropped_with_a_warning(tmp_path) -> None:
    image = read_image(_ngff(tmp_path / "a.zarr", [2.0, 5.0, 5.0], "angstrom"))
    assert image.unit == "um" and image.pixel_size == pytest.approx((2e-4, 5e-4, 5e-4))
    image = read_image(_ngff(tmp_path / "b.zarr", [2.0, 0.5, 0.5], "micrometer"))
    assert image.unit == "um" and image.pixel_size == pytest.approx((2.0, 0.5, 0.5))
    with pytest.warns(napari_unet.errors.CalibrationWarning, match="furlong"):
        image = read_image(_ngff(tmp_path / "c.zarr", [2.0, 0.5, 0.5], "furlong"))
    assert image.pixel_size is None
    for i, scale in enumerate(([-2.0, 0.5, 0.5], ["x", 0.5, 0.5], [None, 0.5, 0.5])):
        with pytest.warns(napari_unet.errors.CalibrationWarning, match="Z"):
            image = read_image(_ngff(tmp_path / f"d{i}.zarr", scale, "micrometer"))
        assert image.pixel_size == (1.0, 0.5, 0.5)
    bad = _ngff(tmp_path / "e.zarr", [2.0, 0.5, 0.5], "micrometer")
    (bad / "zarr.json").write_text((bad / "zarr.json").read_text().replace(
        '"scale": [2.0, 0.5, 0.5]', '"scale": [2.0, NaN, 0.5]'))
    with pytest.warns(napari_unet.errors.CalibrationWarning):
        image = read_image(bad)
    assert image.pixel_size == (2.0, 0.5, 0.5)


@pytest.mark.parametrize("size", [float("nan"), float("inf"), -1.0, 0.0])
def test_zarr_labels_never_get_an_invalid_pixel_size(tmp_path, size) -> None:
    with pytest.raises(InvalidLabelsError, match="pixel size"):
        napari_unet.io.create_labels(tmp_path / "l.zarr", (8, 8), "YX",
                                          pixel_size=(size, 1.0))
    assert not (tmp_path / "l.zarr").exists()


# --------------------------------------------------------------------------- models


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_model_does_not_run_code(capsys, tmp_path, tiff_bytes) -> None:
    import torch

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.safetensors"
    torch.save(_Payload(marker), evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    (tmp_path / "in.tif").write_bytes(tiff_bytes)
    for path in (evil, raw):
        with pytest.raises(ModelFileError):
            load_model(path)
        _segment_cli(capsys, tmp_path / "in.tif", path, tmp_path / "out")
    assert "pickle" in _segment_cli(capsys, tmp_path / "in.tif", evil, tmp_path / "out")
    assert not marker.exists()


def test_corrupt_and_newer_models_through_the_cli(capsys, tmp_path, model_file, tiff_bytes) -> None:
    (tmp_path / "in.tif").write_bytes(tiff_bytes)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(model_file.read_bytes()[:300])
    assert "corrupt" in _segment_cli(capsys, tmp_path / "in.tif", corrupt, tmp_path / "out")

    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as fh:
        meta = fh.metadata()
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(str(model_file)), str(newer), metadata={**meta, "format_version": "7"})
    assert "upgrade" in _segment_cli(capsys, tmp_path / "in.tif", newer, tmp_path / "out")


def test_three_channel_model_with_a_gray_file(capsys, tmp_path, tiff_bytes) -> None:
    rgb = small_model(in_channels=3).save(tmp_path / "rgb.safetensors")
    (tmp_path / "in.tif").write_bytes(tiff_bytes)
    with pytest.raises(ModelMismatchError, match="3 channel"):
        segment(read_image(tmp_path / "in.tif").data, load_model(rgb), device="cpu")
    line = _segment_cli(capsys, tmp_path / "in.tif", rgb, tmp_path / "out")
    assert "3 channel" in line and "all its channels" in line


# --------------------------------------------------------------------------- labels


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((64, 64), np.uint8)
    labels = np.zeros((64, 64), np.int64)
    for i, (y, x) in enumerate([(8, 8), (8, 40), (40, 20)], start=1):
        image[y:y + 14, x:x + 14] = 200
        labels[y:y + 14, x:x + 14] = i
    return image, labels


def test_negative_label_ids(model, pair) -> None:
    image, labels = pair
    with pytest.raises(InvalidLabelsError, match="negative") as info:
        fine_tune(model, Correction(image=image, labels=-labels), **STEPS)
    assert "set negative pixels to 0" in str(info.value)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint64])
def test_label_ids_above_65535_work(model, pair, dtype) -> None:
    image, labels = pair
    tuned = fine_tune(model, Correction(image=image, labels=(labels * 70_000).astype(dtype)),
                      **STEPS)
    assert isinstance(tuned, napari_unet.Model) and tuned is not model


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_float_labels_are_refused_even_when_whole_numbered(model, pair, scale) -> None:
    image, labels = pair
    with pytest.raises(InvalidLabelsError, match="float") as info:
        fine_tune(model, Correction(image=image, labels=labels * scale), **STEPS)
    assert "astype(np.uint32)" in str(info.value)


def test_labels_of_another_shape(model, pair) -> None:
    image, labels = pair
    with pytest.raises(InvalidLabelsError, match="do not match"):
        fine_tune(model, Correction(image=image, labels=labels[:, :-3]), **STEPS)
    with pytest.raises(InvalidLabelsError, match="do not match"):
        fine_tune(model, Correction(image=image, labels=labels.T[None]), **STEPS)


@pytest.mark.parametrize(("labels", "words"), [
    (lambda lab: lab.astype(np.float32), "float32"),
    (lambda lab: -lab.astype(np.int32), "negative"),
    (lambda lab: lab[:32].astype(np.uint16), "do not match"),
], ids=["float", "negative", "shape"])
def test_bad_labels_through_the_cli(capsys, tmp_path, model_file, pair, labels, words) -> None:
    image, good = pair
    _write(tmp_path / "img.tif", image)
    _write(tmp_path / "lab.tif", labels(good))
    line = _cli_error(capsys, ["fine-tune", tmp_path / "img.tif", tmp_path / "lab.tif",
                               "--model", model_file, "--out", tmp_path / "t.safetensors",
                               "--steps", "1", "--device", "cpu"])
    assert words in line
    assert not (tmp_path / "t.safetensors").exists()


def test_large_label_ids_through_the_cli(capsys, tmp_path, model_file, pair) -> None:
    image, labels = pair
    _write(tmp_path / "img.tif", image)
    write_labels(tmp_path / "lab.tif", (labels * 70_000).astype(np.uint32))
    code = main(["fine-tune", str(tmp_path / "img.tif"), str(tmp_path / "lab.tif"),
                 "--model", str(model_file), "--out", str(tmp_path / "t.safetensors"),
                 "--steps", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert load_model(tmp_path / "t.safetensors").in_channels == 1


# --------------------------------------------------------------------------- property


def _expected_label_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """segment()'s documented output: the T/Z/Y/X axes; an RGB(A) last axis is dropped."""
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return shape[:2]
    return shape


@functools.lru_cache(maxsize=1)
def _property_model():
    return small_model()  # built once, lazily (not at import: it seeds torch's global RNG)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32]),
    shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=40),
))
def test_segment_never_raises_a_foreign_exception(arr: np.ndarray) -> None:
    try:
        labels = segment(arr, _property_model(), device="cpu")
    except NapariUnetError:
        return
    _ok_labels(labels, _expected_label_shape(arr.shape))


# --------------------------------------------------------------------------- hangs


def _unblock_later(fifo: Path, seconds: float = 3.0):
    """Open ``fifo``'s write end after ``seconds`` (and close it), so a reader stuck opening
    it gets an empty file instead of waiting forever (a safety net for this test only)."""
    import threading

    def release() -> None:
        with contextlib.suppress(OSError):  # no reader waits: nothing to release
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()
    return timer


def test_a_fifo_given_as_an_image_is_refused_without_waiting(capsys, tmp_path, model_file) -> None:
    from napari_unet._reader import get_reader

    fifo = tmp_path / "in.tif"
    os.mkfifo(fifo)
    timer = _unblock_later(fifo)
    try:
        with pytest.raises(ImageReadError, match="not a regular file"):
            read_image(fifo)
        reader = get_reader(str(fifo))
        with pytest.raises(ImageReadError, match="not a regular file"):
            reader(str(fifo))
        assert "not a regular file" in _segment_cli(capsys, fifo, model_file, tmp_path / "out")
    finally:
        timer.cancel()


def test_tile_overlap_must_be_below_the_tile_size(capsys, tmp_path, model, model_file) -> None:
    image = _image((48, 48))
    with pytest.raises(InvalidSettingError, match="overlap 64.*tile size 64"):
        segment(image, model, tile_size=64, tile_overlap=64, device="cpu")
    # A tile size alone at or below the model's overlap (32) takes a quarter of the tile as
    # overlap instead (the widget offers tiles from 32 pixels and no overlap).
    assert model.config.tile_overlap == 32
    small = segment(image, model, tile_size=16, device="cpu")
    np.testing.assert_array_equal(small, segment(image, model, tile_size=16, tile_overlap=4,
                                                 device="cpu"))
    path = _write(tmp_path / "in.tif", image)
    line = _segment_cli(capsys, path, model_file, tmp_path / "out", "--tile-size", "64",
                        "--overlap", "100")
    assert "overlap 100" in line and "tile size 64" in line
    # The model's own tile size, with an overlap from the command line.
    tile = load_model(model_file).config.tile_size
    line = _segment_cli(capsys, path, model_file, tmp_path / "out", "--overlap", str(tile))
    assert f"overlap {tile}" in line and "below the tile size" in line


def test_a_model_file_whose_overlap_is_not_below_its_tile_size_is_refused(tmp_path) -> None:
    import json as _json

    from safetensors import safe_open

    good = small_model().save(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as fh:
        meta = fh.metadata()
    for i, (tile, overlap) in enumerate([(64, 64), (64, 200), (0, 0), (64, -1)]):
        config = _json.loads(meta["config"])
        config.update(tile_size=tile, tile_overlap=overlap)
        bad = tmp_path / f"bad{i}.safetensors"
        save_file(load_file(str(good)), str(bad), metadata={**meta, "config": _json.dumps(config)})
        with pytest.raises(ModelFileError, match="tile"):
            load_model(bad)


@pytest.mark.parametrize("command", ["fine-tune", "train"])
@pytest.mark.parametrize("budget", ["0", "nan", "inf", "-5"])
def test_time_budget_must_be_a_positive_finite_number(capsys, tmp_path, command, budget) -> None:
    # The inputs do not exist: a budget that got through would fail on them instead.
    argv = (["fine-tune", tmp_path / "a.tif", tmp_path / "b.tif"] if command == "fine-tune"
            else ["train", tmp_path, "--out", tmp_path / "m.safetensors"])
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv] + ["--time-budget", budget])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "--time-budget" in err and "positive" in err and budget in err


# --------------------------------------------------------------------------- option values


@pytest.mark.parametrize("command, option, value, allowed", [
    ("train", "--lr", "nan", "a finite number of at least 0"),
    ("train", "--lr", "-0.1", "a finite number of at least 0"),
    ("train", "--in-channels", "-3", "a whole number of at least 1"),
    ("train", "--val-fraction", "2", "a finite number of at least 0 and below 1"),
    ("train", "--val-last", "-1", "a whole number of at least 0"),
    ("train", "--patience", "-1", "a whole number of at least 0"),
    ("train", "--seed", "-1", "a whole number from 0 to 4294967295"),
    ("train", "--steps", "0", "a whole number of at least 1"),
    ("train", "--batch-size", "0", "a whole number of at least 1"),
    ("train", "--patch-size", "1.5", "a whole number of at least 1"),
    ("train", "--val-every", "0", "a whole number of at least 1"),
    ("segment", "--seed-threshold", "1.5", "a number from 0 to 1"),
    ("segment", "--seed-threshold", "nan", "a number from 0 to 1"),
    ("segment", "--foreground-threshold", "-0.1", "a number from 0 to 1"),
    ("segment", "--min-size", "-1", "a whole number of at least 0"),
    ("segment", "--tile-size", "0", "a whole number of at least 1"),
    ("segment", "--overlap", "-1", "a whole number of at least 0"),
    ("segment", "--block-size", "10", "a whole number of at least 64"),
    ("segment", "--halo", "-1", "a whole number of at least 0"),
    ("segment", "--batch-size", "0", "a whole number of at least 1"),
    ("segment", "--object-size", "0", "a positive finite number"),
    ("segment", "--object-size", "inf", "a positive finite number"),
    ("segment", "--workers", "0", "a whole number of at least 1"),
    ("segment", "--scheduler", "nonsense", "'local' or a scheduler address such as tcp://host:8786"),
    ("segment", "--scheduler", "ftp://host:1", "'local' or a scheduler address such as tcp://host:8786"),
    ("evaluate", "--limit", "0", "a whole number of at least 1"),
    ("fine-tune", "--steps", "-5", "a whole number of at least 1"),
])
def test_option_values_outside_their_range_are_refused(capsys, tmp_path, command, option, value,
                                                       allowed) -> None:
    """Before any work (the inputs do not even exist): exit status 2 and one line naming the
    option, the allowed values and the value given."""
    inputs = {"train": [tmp_path, "--out", tmp_path / "m"], "segment": [tmp_path / "a.tif", "--out",
              tmp_path], "evaluate": [tmp_path], "fine-tune": [tmp_path / "a", tmp_path / "b"]}
    with pytest.raises(SystemExit) as info:
        main([command, *map(str, inputs[command]), option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"napari-unet {command}: error: argument {option}: "
                                            f"must be {allowed}, got {value}")


@pytest.mark.parametrize("call, words", [
    (lambda tmp: napari_unet.TrainConfig(lr=math.nan), ("lr is nan, but it must be a "
                                                                 "finite number of at least 0")),
    (lambda tmp: napari_unet.TrainConfig(patience=-1), "patience is -1"),
    (lambda tmp: napari_unet.TrainConfig(seed=-1), "seed is -1"),
    (lambda tmp: napari_unet.TrainConfig(time_budget=math.inf), "time_budget is inf"),
    (lambda tmp: napari_unet.train(tmp, val_fraction=2.0, config=napari_unet.TrainConfig(
        steps=1)), "val_fraction is 2.0, but it must be a finite number of at least 0 and below 1"),
    (lambda tmp: napari_unet.train(tmp, in_channels=-3), "network.in_channels is -3"),
    (lambda tmp: napari_unet.segment(_image(), small_model(), seed_threshold=math.nan),
     "seed_threshold is nan, but it must be a number from 0 to 1"),
    (lambda tmp: napari_unet.config.PostprocessConfig(foreground_threshold=2.0),
     "postprocess.foreground_threshold is 2.0"),
    (lambda tmp: napari_unet.blocks.BlockConfig(halo=-1), "halo is -1"),
    (lambda tmp: napari_unet.batch.segment_files([tmp / "a.tif"], tmp, "nuclei",
                                                 scheduler="nonsense"),
     "scheduler is 'nonsense', but it must be 'local' or a scheduler address"),
    (lambda tmp: napari_unet.SegmentOptions(device="tpu"),
     "device is 'tpu', but it must be one of 'auto', 'cpu', 'cuda', 'mps'"),
    (lambda tmp: napari_unet.SegmentOptions(tile_size=0), "tile_size is 0"),
    (lambda tmp: napari_unet.SegmentOptions(stitch_3d=1), "stitch_3d is 1"),
    (lambda tmp: napari_unet.SegmentOptions(object_size=0.0),
     "object_size is 0.0, but it must be a positive finite number"),
    (lambda tmp: napari_unet.segment(_image(), small_model(), tile_sise=64),
     "unknown segment option(s) tile_sise"),
])
def test_the_library_refuses_the_same_values(tmp_path, call, words) -> None:
    """The rule behind each option is the library's: the same values raise
    InvalidSettingError there, before any work (``tmp_path`` holds no data at all)."""
    import re

    with pytest.raises(InvalidSettingError, match=re.escape(words)):
        call(tmp_path)
