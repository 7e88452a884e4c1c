"""Tests for napari_unet.cli: every sub-command in-process, plus the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
import torch
from _data import DSB_TEST, DSB_TRAIN, pair_folder, qcanet_stack, small_model

from napari_unet import __version__
from napari_unet.cli import main
from napari_unet.model import load_model_file


@pytest.fixture(scope="module")
def trained(real_data, tmp_path_factory) -> Path:
    """A model trained by `napari-unet train` (10 steps, from a small base model)."""
    root = tmp_path_factory.mktemp("cli")
    data = pair_folder(root / "train", real_data, DSB_TRAIN)
    base = small_model(seed=0).save(root / "base.safetensors")
    out = root / "tiny.safetensors"
    code = main(["train", str(data), "--out", str(out), "--base-model", str(base),
                 "--steps", "10", "--patch-size", "64", "--batch-size", "2",
                 "--val-fraction", "0.5", "--val-every", "5", "--device", "cpu"])
    assert code == 0
    return out


def test_train_writes_a_model(trained: Path, capsys) -> None:
    model = load_model_file(trained)
    assert model.name == "tiny"
    assert model.config.network.base == 8  # started from the base model
    prov = model.config.provenance
    assert prov["steps"] == 10 and prov["n_val_images"] == 2
    assert "calibrated_seed_threshold" in prov
    # the command as given to main(), absolute paths cut to their last two parts
    assert prov["command"].startswith("napari-unet train cli0/train --out cli0/tiny.safetensors")
    assert prov["data"] == "cli0/train" and "/tmp" not in json.dumps(prov)


def test_train_refuses_to_overwrite(trained: Path, real_data, tmp_path: Path, capsys) -> None:
    before = trained.read_bytes()
    code = main(["train", str(tmp_path), "--out", str(trained), "--steps", "1"])
    assert code == 2
    assert "exists" in capsys.readouterr().err
    assert trained.read_bytes() == before


def test_segment_writes_labels_and_overlay(trained: Path, real_data, tmp_path: Path,
                                           capsys) -> None:
    image = real_data / "dsb2018_fluo" / "test" / "images" / f"{DSB_TEST[0]}.png"
    out = tmp_path / "out"
    code = main(["segment", str(image), "--model", str(trained), "--out", str(out),
                 "--overlay", "--device", "cpu", "--tile-size", "128", "--batch-size", "2"])
    assert code == 0
    labels_path = out / f"{DSB_TEST[0]}_labels.tif"
    labels = tifffile.imread(labels_path)
    assert labels.dtype.kind == "u" and labels.shape == (256, 256)
    overlay = out / f"{DSB_TEST[0]}_overlay.png"
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(labels_path) in capsys.readouterr().out

    before, mtime = labels_path.read_bytes(), labels_path.stat().st_mtime_ns
    code = main(["segment", str(image), "--model", str(trained), "--out", str(out),
                 "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "exists" in err and "Traceback" not in err
    assert labels_path.read_bytes() == before and labels_path.stat().st_mtime_ns == mtime

    code = main(["segment", str(image), "--model", str(trained), "--out", str(out),
                 "--device", "cpu", "--overwrite", "--min-size", "1000000"])
    assert code == 0
    assert not tifffile.imread(labels_path).any()  # the option reached post-processing


def test_segment_object_size(real_data, tmp_path: Path, capsys) -> None:
    """--object-size resizes for the model as the library's object_size does, and is
    refused before any file when the model does not record its object size."""
    import numpy as np

    from napari_unet import load_model, segment
    from napari_unet.io import read_image

    image = real_data / "dsb2018_fluo" / "test" / "images" / f"{DSB_TEST[0]}.png"
    code = main(["segment", str(image), "--model", "nuclei", "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--object-size", "40"])
    assert code == 0
    data = read_image(image)
    expected = segment(np.asarray(data.data), load_model("nuclei"), data.axes, device="cpu",
                       object_size=40.0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / f"{DSB_TEST[0]}_labels.tif"),
                                  expected)
    capsys.readouterr()
    unknown = small_model().save(tmp_path / "unknown.safetensors")
    code = main(["segment", str(image), "--model", str(unknown), "--out", str(tmp_path / "u"),
                 "--device", "cpu", "--object-size", "40"])
    err = capsys.readouterr().err
    assert code == 2 and "does not record the object size" in err and "Traceback" not in err
    assert not (tmp_path / "u").exists()


def test_segment_a_stack(trained: Path, real_data, tmp_path: Path) -> None:
    path = tmp_path / "embryo.tif"
    tifffile.imwrite(path, qcanet_stack(real_data)[20:23, 28:92, 29:93], imagej=True,
                     metadata={"axes": "ZYX"})
    code = main(["segment", str(path), "--model", str(trained), "--out", str(tmp_path),
                 "--stitch-3d", "--device", "cpu"])
    assert code == 0
    labels = tifffile.imread(tmp_path / "embryo_labels.tif")
    assert labels.shape == (3, 64, 64) and labels.dtype.kind == "u"


def test_voxel_size_flag_builds_3d_objects_and_calibrates_the_labels(real_data, tmp_path: Path,
                                                                    capsys) -> None:
    path = tmp_path / "embryo.tif"
    tifffile.imwrite(path, qcanet_stack(real_data)[8:16], imagej=True, metadata={"axes": "ZYX"})
    code = main(["segment", str(path), "--out", str(tmp_path), "--stitch-3d",
                 "--voxel-size", "2.18,1,1", "--device", "cpu"])
    assert code == 0
    with tifffile.TiffFile(tmp_path / "embryo_labels.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 2.18  # napari and Fiji show it in proportion
        assert tif.imagej_metadata["unit"] == "pixel"
    with pytest.raises(SystemExit) as info:
        main(["segment", str(path), "--out", str(tmp_path), "--voxel-size", "2.18,1"])
    assert info.value.code == 2
    assert "--voxel-size: must be 3 positive finite numbers" in capsys.readouterr().err


def test_evaluate_writes_csv(trained: Path, real_data, tmp_path: Path, capsys) -> None:
    data = pair_folder(tmp_path / "test", real_data, DSB_TEST, "test")
    csv_path = tmp_path / "scores.csv"
    code = main(["evaluate", str(data), "--model", str(trained), "--csv", str(csv_path),
                 "--device", "cpu"])
    assert code == 0
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("image,") and len(lines) == 4  # header, 2 images, overall
    assert lines[-1].startswith("overall,")
    assert "2 images, 59 true objects" in capsys.readouterr().out


def test_models_lists_user_models(trained: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "mine.safetensors").write_bytes(trained.read_bytes())
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    assert main(["models"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("mine")]
    assert line and "user" in line[0] and "instance" in line[0] and "base=8" in line[0]


def test_missing_input_is_one_line_without_traceback(trained: Path, tmp_path: Path,
                                                     capsys) -> None:
    code = main(["segment", str(tmp_path / "nope.tif"), "--model", str(trained),
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("napari-unet: error:")
    assert "nope.tif" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_bad_model_is_one_line(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a model at all")
    code = main(["evaluate", str(tmp_path), "--model", str(fake)])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", [[], ["segment"], ["train"], ["evaluate"], ["models"]])
def test_help(command, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    assert "usage: napari-unet" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.tif"])  # --out missing
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_installed_console_script() -> None:
    script = Path(sys.executable).parent / "napari-unet"
    if not script.is_file():
        pytest.skip(f"console script not installed next to {sys.executable}")
    run = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"napari-unet {__version__}"


def test_colliding_outputs_are_refused_before_any_work(trained: Path, real_data,
                                                       tmp_path: Path, capsys) -> None:
    image = real_data / "dsb2018_fluo" / "test" / "images" / f"{DSB_TEST[0]}.png"
    other = tmp_path / "elsewhere" / image.name
    other.parent.mkdir()
    other.symlink_to(image)
    out = tmp_path / "out"
    code = main(["segment", str(image), str(other), "--model", str(trained), "--out", str(out)])
    assert code == 2
    assert "both write" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_missing_device_is_one_line(trained: Path, real_data, tmp_path: Path, monkeypatch,
                                    capsys) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    image = real_data / "dsb2018_fluo" / "test" / "images" / f"{DSB_TEST[0]}.png"
    code = main(["segment", str(image), "--model", str(trained), "--out", str(tmp_path),
                 "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA GPU" in err and "Traceback" not in err


def test_train_out_without_suffix_is_checked_as_saved(trained: Path, real_data,
                                                      tmp_path: Path, capsys) -> None:
    existing = tmp_path / "m.v2.safetensors"
    existing.write_bytes(b"keep me")
    data = pair_folder(tmp_path / "data", real_data, DSB_TRAIN[:2])
    code = main(["train", str(data), "--out", str(tmp_path / "m.v2"), "--steps", "1"])
    assert code == 2 and "exists" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


def test_patch_size_must_fit_the_network(real_data, tmp_path: Path, capsys) -> None:
    data = pair_folder(tmp_path / "data", real_data, DSB_TRAIN[:2])
    code = main(["train", str(data), "--out", str(tmp_path / "m"), "--steps", "1",
                 "--patch-size", "100", "--val-fraction", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "multiple of 16" in err and "Traceback" not in err


def _sample_crop(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The bundled sample's top-left 128 x 128, the shipped model's labels with three true
    nuclei pasted in (the user's corrections), and the mask of those corrections."""
    import numpy as np

    import napari_unet
    from napari_unet.sample_data import load_sample

    image = np.asarray(load_sample("nuclei_fluo").data)[:128, :128]
    truth = np.asarray(load_sample("nuclei_fluo_labels").data)[:128, :128]
    shown = napari_unet.segment(image, napari_unet.load_model("nuclei"), device="cpu")
    labels = shown.astype(np.uint16)
    for k, nucleus in enumerate(np.unique(truth)[1:4]):
        labels[truth == nucleus] = shown.max() + 1 + k
    paths = [tmp_path / n for n in ("img.tif", "corrected.tif", "mask.tif")]
    tifffile.imwrite(paths[0], image)
    tifffile.imwrite(paths[1], labels)
    tifffile.imwrite(paths[2], (labels != shown).astype(np.uint8))
    return tuple(paths)


def test_fine_tune_reports_steps_and_the_check(tmp_path: Path, capsys) -> None:
    image, labels, mask = _sample_crop(tmp_path)
    out = tmp_path / "tuned.safetensors"
    code = main(["fine-tune", str(image), str(labels), "--mask", str(mask), "--model", "nuclei",
                 "--steps", "4", "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "4 of 4 steps" in text and "corrected objects right" in text
    assert load_model_file(out).config.provenance["fine_tune_rounds"][-1]["steps"] == 4


def test_fine_tune_does_not_save_a_refused_round(tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    from napari_unet import cli

    def broken(model, *args, **kwargs):  # a round that labels everything as an object
        bad = model.copy("broken")
        last = [m for m in bad.network.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor([-10.0, 10.0, -10.0]))
        bad.config.provenance = {"fine_tune_rounds": [{"steps": 4, "supervised_pixels": 1}]}
        return bad

    monkeypatch.setattr(cli, "fine_tune", broken)
    image, labels, mask = _sample_crop(tmp_path)
    out = tmp_path / "tuned.safetensors"
    args = ["fine-tune", str(image), str(labels), "--mask", str(mask), "--out", str(out),
            "--device", "cpu"]
    assert main(args) == 1 and not out.exists()
    assert "--save-refused" in capsys.readouterr().err
    assert main(args + ["--save-refused"]) == 0 and out.is_file()


def test_train_continues_from_its_checkpoint(real_data, tmp_path: Path, capsys) -> None:
    """--checkpoint keeps the run's state; the same command with --resume continues it (a
    finished run has nothing left: the same weights come out); other settings, or no
    --resume, are refused before any work. Mid-run resumption: tests/test_checkpoint.py."""
    data = pair_folder(tmp_path / "train", real_data, DSB_TRAIN)
    base = small_model(seed=0).save(tmp_path / "base.safetensors")
    ckpt = tmp_path / "run.ckpt"
    common = ["--base-model", str(base), "--steps", "6", "--patch-size", "64",
              "--batch-size", "2", "--val-fraction", "0.5", "--val-every", "3",
              "--device", "cpu", "--no-fast", "--augment", "robust", "--checkpoint", str(ckpt)]
    assert main(["train", str(data), "--out", str(tmp_path / "first"), *common]) == 0
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(tmp_path / "again"), *common]) == 2
    assert "--resume" in capsys.readouterr().err
    longer = [c if c != "6" else "9" for c in common]
    assert main(["train", str(data), "--out", str(tmp_path / "again"), *longer, "--resume"]) == 2
    assert "steps: checkpoint 6, now 9" in capsys.readouterr().err
    assert main(["train", str(data), "--out", str(tmp_path / "again"), *common, "--resume"]) == 0
    first = load_model_file(tmp_path / "first.safetensors")
    again = load_model_file(tmp_path / "again.safetensors")
    assert again.config.provenance["steps"] == 6
    for key, value in first.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key
    assert main(["train", str(data), "--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_segment_and_evaluate_take_rgb_and_tta(trained: Path, real_data, tmp_path: Path,
                                               capsys) -> None:
    data = pair_folder(tmp_path / "test", real_data, DSB_TEST[:1], "test")
    code = main(["evaluate", str(data), "--model", str(trained), "--device", "cpu",
                 "--tta", "--rgb", "mean"])
    assert code == 0 and "1 images" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["segment", str(next((data / "images").iterdir())), "--out", str(tmp_path),
              "--rgb", "hsv"])
    assert info.value.code == 2 and "--rgb" in capsys.readouterr().err
