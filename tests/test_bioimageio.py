"""bioimage.io model packages: every export is validated by the ``bioimageio.spec`` package
offline (sockets refused, cache in a temporary folder), runs without napari-unet (its
architecture source and TorchScript reproduce the test tensors), and loads back through
``load_model`` exactly; packages that napari-unet did not make, edited, oversized or
carrying code are refused with a ModelFileError and nothing from them runs.

bioimageio.core's model test is not run here: its newest release (0.11.0) pins
bioimageio.spec 0.5.12.0, which fails on the pydantic napari-unet's stack installs
(2.14); docs/models.md gives the command that ran it on these packages.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import napari_unet
from napari_unet.bioimageio import export_bioimageio, load_bioimageio
from napari_unet.cli import main
from napari_unet.config import preset
from napari_unet.errors import ModelFileError
from napari_unet.sample_data import load_sample


@pytest.fixture(scope="module")
def validate(tmp_path_factory):
    """bioimageio.spec's validation of a package (with its checks of every file), with the
    network refused: any attempt to reach it fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        from bioimageio.spec import load_description

        def check(path: Path) -> None:
            summary = load_description(path, perform_io_checks=True).validation_summary
            errors = [f"{e.loc}: {e.msg}" for d in summary.details for e in d.errors]
            assert summary.status == "valid-format" and not errors, errors

        yield check


def tiny(task: str = "instance", **network) -> napari_unet.Model:
    config = preset("default", task=task, class_names=("membrane",) if task == "semantic" else None)
    config.network.base, config.network.depth = 4, 2
    for key, value in network.items():
        setattr(config.network, key, value)
    return napari_unet.Model.create(config, name=f"tiny-{task}", seed=0)


@pytest.fixture(scope="module")
def nuclei_package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "nuclei.zip"
    assert main(["export-bioimageio", "nuclei", str(out)]) == 0
    return out


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def rdf_of(files: dict[str, bytes]) -> dict:
    return yaml.safe_load(files["bioimageio.yaml"])


def repack(src: Path, dst: Path, edit=None, **replace: bytes) -> Path:
    """A copy of package ``src`` with its description changed by ``edit`` and files replaced."""
    files = members(src)
    if edit is not None:
        rdf = rdf_of(files)
        edit(rdf)
        files["bioimageio.yaml"] = yaml.safe_dump(rdf).encode()
    files.update({k.replace("__", "."): v for k, v in replace.items()})
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return dst


def test_shipped_model_exports_a_valid_package_that_loads_back_exactly(nuclei_package, validate):
    validate(nuclei_package)
    files = members(nuclei_package)
    rdf = rdf_of(files)
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["inputs"][0]["preprocessing"][0]["kwargs"]["max_percentile"] == 99.8
    assert rdf["training_data"]["name"] == "dsb2018_fluo/train"
    assert "val_accuracy@0.5" in files["README.md"].decode()
    assert files["cover.png"].startswith(b"\x89PNG")
    assert "://" not in files["bioimageio.yaml"].decode()  # nothing to fetch

    original, loaded = napari_unet.load_model("nuclei"), napari_unet.load_model(nuclei_package)
    assert loaded.config.to_dict() == original.config.to_dict() and loaded.name == "nuclei"
    for key, value in original.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value.float() if value.is_floating_point() else value)
    image = np.asarray(load_sample("nuclei_fluo").data)[:128, :128]
    np.testing.assert_array_equal(napari_unet.segment(image, loaded), napari_unet.segment(image, original))


def test_package_reproduces_its_test_tensors_without_napari_unet(nuclei_package, tmp_path,
                                                                 monkeypatch):
    """What a bioimage.io tool does: the architecture source with the kwargs and the state
    dict, the described pre- and post-processing, the test tensors; TorchScript too."""
    files = members(nuclei_package)
    rdf = rdf_of(files)
    weights = rdf["weights"]["pytorch_state_dict"]
    (tmp_path / "arch.py").write_bytes(files[weights["architecture"]["source"]])
    monkeypatch.setitem(sys.modules, "napari_unet", None)  # importing it would fail
    spec = importlib.util.spec_from_file_location("package_arch", tmp_path / "arch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = getattr(module, weights["architecture"]["callable"])(**weights["architecture"]["kwargs"])
    network.load_state_dict(torch.load(io.BytesIO(files[weights["source"]]), weights_only=True))
    network.eval()

    raw = np.load(io.BytesIO(files["test_input.npy"]))
    kwargs = rdf["inputs"][0]["preprocessing"][0]["kwargs"]
    lo, hi = np.percentile(raw, [kwargs["min_percentile"], kwargs["max_percentile"]],
                           axis=(2, 3), keepdims=True)
    x = torch.from_numpy(((raw - lo) / (hi - lo + kwargs["eps"])).astype(np.float32))
    with torch.no_grad():
        probs = torch.softmax(network(x), 1).numpy()
    np.testing.assert_allclose(probs, np.load(io.BytesIO(files["test_output.npy"])), atol=1e-4)

    with warnings.catch_warnings():  # torch.jit is deprecated; bioimage.io tools still run it
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(io.BytesIO(files[rdf["weights"]["torchscript"]["source"]]))
    part = x[..., :64, :96]  # another size than the test input's
    with torch.no_grad():
        np.testing.assert_allclose(scripted(part).numpy(), network(part).numpy(), atol=1e-4)


def test_semantic_inverted_model_from_a_file_round_trips(tmp_path, validate):
    model = tiny("semantic", norm="none", upsampling="bilinear")
    model.config.normalization.invert = True
    source = model.save(tmp_path / "tiny.safetensors")
    out = tmp_path / "tiny-package"  # .zip is appended
    assert main(["export-bioimageio", str(source), str(out), "--image", "em_membrane"]) == 0
    out = out.with_name("tiny-package.zip")
    validate(out)
    rdf = rdf_of(members(out))
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == ["scale_range", "scale_linear"]
    assert rdf["outputs"][0]["postprocessing"] == [{"id": "sigmoid"}]
    loaded = napari_unet.load_model(out)
    image = np.asarray(load_sample("em_membrane").data)[:96, :96]
    np.testing.assert_array_equal(napari_unet.segment(image, loaded),
                                  napari_unet.segment(image, model))

    folder = tmp_path / "unpacked"  # the unpacked folder is a package too
    zipfile.ZipFile(out).extractall(folder)
    assert load_bioimageio(folder).config.to_dict() == model.config.to_dict()


def test_an_existing_package_is_kept_without_overwrite(tmp_path, capsys):
    source = tiny().save(tmp_path / "tiny.safetensors")
    out = tmp_path / "p.zip"
    out.write_bytes(b"keep me")
    assert main(["export-bioimageio", str(source), str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["export-bioimageio", str(source), str(out), "--overwrite"]) == 0
    assert zipfile.is_zipfile(out)


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    return export_bioimageio(tiny(), tmp_path_factory.mktemp("tiny") / "tiny.zip")


class Boom:
    """Pickled, this would create ``marker`` when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _drop_ours(rdf):
    del rdf["config"]["napari_unet"]


def _deeper(rdf):
    rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["depth"] = 3


def _bad_depth(rdf):
    rdf["config"]["napari_unet"]["config"]["network"]["depth"] = 99


def _escape(rdf):
    rdf["weights"]["pytorch_state_dict"]["source"] = "../weights.pt"


@pytest.mark.parametrize("edit, replace, message", [
    (_drop_ours, {}, "did not export"),
    (_deeper, {}, "is not the network"),
    (_bad_depth, {}, "network.depth is 99"),
    (_escape, {}, "not the name of a file in the package"),
    (None, {"weights__pt": bytes(4 << 20)}, "more than the"),  # 4 MiB of zeros: a zip bomb
    (None, {"weights__pt": b"not a torch file"}, "not a PyTorch archive"),
    (None, {"bioimageio__yaml": b"a: &x [1]\nb: *x\n"}, "aliases"),
])
def test_packages_napari_unet_cannot_trust_are_refused(tiny_package, tmp_path, edit, replace,
                                                       message):
    bad = repack(tiny_package, tmp_path / "bad.zip", edit, **replace)
    with pytest.raises(ModelFileError, match=message):
        napari_unet.load_model(bad)


def test_no_code_from_a_package_runs_when_it_is_loaded(tiny_package, tmp_path):
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\n".encode()
    buffer = io.BytesIO()
    torch.save({"x": Boom(marker)}, buffer)
    bad = repack(tiny_package, tmp_path / "code.zip", architecture__py=source)
    assert napari_unet.load_model(bad).name == "tiny-instance"  # its own source never runs
    bad = repack(tiny_package, tmp_path / "pickle.zip", weights__pt=buffer.getvalue())
    with pytest.raises(ModelFileError, match="not a plain state dict"):
        napari_unet.load_model(bad)
    assert not marker.exists()
