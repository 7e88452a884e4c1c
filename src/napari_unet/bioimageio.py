"""bioimage.io model packages (format 0.5): export any napari-unet model, import our own.

An export is one zip that bioimage.io tools (bioimageio.core, deepImageJ, ilastik) run
without napari-unet: the weights as a ``pytorch_state_dict`` with the architecture source
(:mod:`napari_unet.architecture`, verbatim) and as TorchScript, the axes, the percentile
normalisation as ``scale_range``, test tensors and a cover made from a real image, the
training data and scores from the model's provenance, and the U-Net paper to cite. Nothing
in it is a URL to fetch.

Importing treats the package as untrusted: its architecture source and TorchScript are
never run. napari-unet rebuilds its own network from the model config stored in the
package's ``config.napari_unet`` (checked by the config rules), reads the state dict with
``torch.load(weights_only=True)`` after checking the declared sizes of the zip members it
reads (no zip bombs), and checks the weights against the network, as for a model file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from dataclasses import asdict
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import imageio.v3 as iio
import numpy as np
import torch
import yaml

from ._version import __version__
from .errors import InvalidImageError, ModelFileError
from .io import ArrayLike, read_image
from .io.atomic import atomic_path
from .model import FORMAT_NAME, FORMAT_VERSION, Model, config_from_data, model_from_parts
from .normalize import channel_percentiles, normalize
from .overlay import overlay_rgb
from .sample_data import SAMPLES, sample_path
from .segment import Predictor, prepare_image

#: The bioimage.io model format written (0.5.4 is read by every 0.5 tool since 2024).
BIOIMAGEIO_FORMAT = "0.5.4"
#: Names a package's description may have (bioimage.io writes the first since 2024).
RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: The largest description read: ours are a few kB.
MAX_RDF_BYTES = 1 << 20
#: Side of the square test image (smaller when the image is): the test tensors and cover.
TEST_SIDE = 256
_INPUT_ID, _OUTPUT_ID = "raw", "probabilities"
_ARCHITECTURE = "architecture.py"
_UNET_DOI = "10.1007/978-3-319-24574-4_28"


# ------------------------------------------------------------------------------- export
def default_sample(model: Model) -> str:
    """The bundled sample an export uses when given no image: the shipped models' own kind
    of image (fluorescent nuclei for instance models, EM membranes for semantic ones)."""
    return "nuclei_fluo" if model.config.task == "instance" else "em_membrane"


def test_image(image: ArrayLike | str | Path | None, model: Model,
               axes: Optional[str] = None) -> np.ndarray:
    """The (C, Y, X) raw test image of an export: the central square of at most
    :data:`TEST_SIDE` pixels (a multiple of what the network needs) of the middle plane of
    ``image`` (an array, a file path, a bundled sample name, or None: :func:`default_sample`)."""
    if image is None or (isinstance(image, str) and image in SAMPLES):
        image = sample_path(image or default_sample(model))
    if isinstance(image, (str, Path)):
        loaded = read_image(image)
        image, axes = loaded.data, axes or loaded.axes
    prepared = prepare_image(image, model, axes)
    canonical = prepared.canonical
    multiple = model.config.network.size_multiple
    height, width = canonical.shape[-2:]
    side = min(TEST_SIDE, height, width) // multiple * multiple
    if side == 0:
        raise InvalidImageError(
            f"the test image is {height}x{width} pixels, smaller than the {multiple} pixels "
            f"this network needs per side; choose a larger image")
    y0, x0 = (height - side) // 2, (width - side) // 2
    middle = tuple(n // 2 for n in canonical.shape[:-3])
    crop = canonical[middle + (slice(None), slice(y0, y0 + side), slice(x0, x0 + side))]
    return np.asarray(crop, dtype=np.float32)


def _probabilities(model: Model, plane: np.ndarray) -> np.ndarray:
    """(1, K, Y, X) float32 probabilities of the network for a raw (C, Y, X) plane, by the
    steps the package describes: percentiles of this plane, the network in fp32, then
    softmax (instance) or sigmoid (semantic)."""
    norm = model.config.normalization
    normalised = normalize(plane, channel_percentiles(plane, norm, channel_axis=0), norm.invert)
    network = model.network.eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(normalised[None]))
    probs = torch.softmax(logits, 1) if model.config.task == "instance" else torch.sigmoid(logits)
    return probs.numpy().astype(np.float32)


def _cover(model: Model, plane: np.ndarray, probs: np.ndarray) -> bytes:
    """A 2:1 PNG (bioimage.io's cover ratio): the test image beside napari-unet's labels
    for it, made from the test output ``probs`` by the model's post-processing."""
    labels = Predictor(model, device="cpu", fast=False).labels(probs[0])
    gray = plane[0]
    rgb = np.concatenate([overlay_rgb(gray, np.zeros_like(labels)), overlay_rgb(gray, labels)],
                         axis=1)
    return bytes(iio.imwrite("<bytes>", rgb, extension=".png"))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _torchscript(model: Model) -> bytes:
    """The network traced with a small input (the traced network takes any size the
    network does; the network's Python-only loops do not script). The tests compare it
    with the network at another size, so torch's own trace check (seconds) is skipped."""
    side = 2 * model.config.network.size_multiple
    example = torch.zeros(1, model.in_channels, side, side)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated, and still what bioimage.io runs
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model.network.eval(), example, check_trace=False)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _state_dict(model: Model) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()},
               buffer)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _scores(provenance: dict[str, Any]) -> dict[str, float]:
    """The numbers the model's provenance records at top level (validation scores, losses,
    counts of images and steps), for the package's documentation."""
    return {k: v for k, v in provenance.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _training_data(provenance: dict[str, Any]) -> str:
    """The training data's name without the machine's folders (``dsb2018_fluo/train``)."""
    data = provenance.get("data")
    return "/".join(PurePosixPath(str(data).replace("\\", "/")).parts[-2:]) if data else ""


def _readme(model: Model, scores: dict[str, float], data: str) -> str:
    config = model.config
    rounds = config.provenance.get("fine_tune_rounds", [])
    lines = [
        f"# napari-unet model {model.name}", "",
        (f"A 2-D U-Net (Ronneberger, Fischer & Brox 2015, doi:{_UNET_DOI}) exported by "
        f"napari-unet {__version__}: task {config.task}, classes {', '.join(config.class_names)}."),
        "",
        "## Input and output",
        f"- Input `{_INPUT_ID}`: batch, {config.network.in_channels} channel(s), y, x; sides "
        f"multiples of {config.network.size_multiple}. Pre-processing: each channel scaled "
        f"so its {config.normalization.low} and {config.normalization.high} percentiles map "
        f"to 0 and 1" + (", then inverted (1 - x)" if config.normalization.invert else "") + ".",
        (f"- Output `{_OUTPUT_ID}`: one probability per class and pixel "
        f"({'softmax' if config.task == 'instance' else 'sigmoid'} of the network's logits)."),
    ]
    if config.input_scale != 1.0:
        lines.append(f"- napari-unet resizes images by {config.input_scale:g} before the "
                     "network; bioimage.io tools do not, so resize the image yourself.")
    if config.task == "instance":
        lines.append("- napari-unet turns the interior and boundary probabilities into "
                     f"objects by a seeded watershed (seed threshold "
                     f"{config.postprocess.seed_threshold:g}, foreground threshold "
                     f"{config.postprocess.foreground_threshold:g}).")
    lines += ["", "## Training", f"- Data: {data or 'not recorded'}"]
    lines += [f"- {key}: {value:g}" for key, value in scores.items()]
    if rounds:
        lines.append(f"- Fine-tuned in {len(rounds)} round(s) on corrected labels.")
    lines += ["", "## Validation",
              ("The test tensors are the central square of a real image (test_input.npy) and "
              "this model's probabilities for it (test_output.npy), computed in fp32 by "
              "napari-unet with the pre- and post-processing described here; cover.png shows "
              "the image and napari-unet's labels for it.")]
    return "\n".join(lines) + "\n"


def build_rdf(model: Model, files: dict[str, bytes], input_shape: tuple[int, ...]) -> dict:
    """The bioimage.io description of ``model`` whose ``files`` (name -> content) are
    already made (their checksums are recorded)."""
    config = model.config
    net = config.network
    multiple = net.size_multiple
    provenance = config.provenance
    data, scores = _training_data(provenance), _scores(provenance)
    torch_version = torch.__version__.split("+")[0]
    space = [{"type": "space", "id": axis, "size": {"min": multiple, "step": multiple}}
             for axis in ("y", "x")]
    preprocessing: list[dict[str, Any]] = [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": config.normalization.low,
        "max_percentile": config.normalization.high, "eps": 1e-6}}]
    if config.normalization.invert:
        preprocessing.append({"id": "scale_linear", "kwargs": {"gain": -1.0, "offset": 1.0}})
    activation = ({"id": "softmax", "kwargs": {"axis": "channel"}}
                  if config.task == "instance" else {"id": "sigmoid"})
    rdf: dict[str, Any] = {
        "type": "model",
        "format_version": BIOIMAGEIO_FORMAT,
        "name": f"napari-unet {model.name}"[:128],
        "description": (f"2-D U-Net for {config.task} segmentation ({', '.join(config.class_names)}) "
                        f"made with napari-unet {__version__}")[:1024],
        "authors": [{"name": "napari-unet contributors"}],
        "cite": [{"text": "Ronneberger O., Fischer P., Brox T. (2015). U-Net: Convolutional "
                          "Networks for Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, "
                          "234-241.", "doi": _UNET_DOI}],
        "license": "BSD-3-Clause",
        "tags": ["napari-unet", "unet", "2d", "pytorch", "segmentation",
                 f"{config.task}-segmentation"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": _INPUT_ID,
            "axes": [{"type": "batch"},
                     {"type": "channel",
                      "channel_names": [f"channel{i}" for i in range(net.in_channels)]},
                     *space],
            "test_tensor": {"source": "test_input.npy",
                            "sha256": _sha256(files["test_input.npy"])},
            "data": {"type": "float32"},
            "preprocessing": preprocessing,
        }],
        "outputs": [{
            "id": _OUTPUT_ID,
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(config.class_names)},
                     *({"type": "space", "id": axis,
                        "size": {"tensor_id": _INPUT_ID, "axis_id": axis}}
                       for axis in ("y", "x"))],
            "test_tensor": {"source": "test_output.npy",
                            "sha256": _sha256(files["test_output.npy"])},
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "postprocessing": [activation],
        }],
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt", "sha256": _sha256(files["weights.pt"]),
                "architecture": {"source": _ARCHITECTURE,
                                 "sha256": _sha256(files[_ARCHITECTURE]),
                                 "callable": "UNetArchitecture", "kwargs": asdict(net)},
                "pytorch_version": torch_version,
            },
            "torchscript": {
                "source": "weights.torchscript.pt",
                "sha256": _sha256(files["weights.torchscript.pt"]),
                "parent": "pytorch_state_dict", "pytorch_version": torch_version,
            },
        },
        "config": {"napari_unet": {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": model.name,
            "package_version": __version__, "test_input_shape": list(input_shape),
            "config": config.to_dict(),
        }},
    }
    if data:
        rdf["training_data"] = {
            "type": "dataset", "format_version": "0.3.0", "name": data,
            "description": f"The images napari-unet trained this model on ({data}); "
                           + ", ".join(f"{k} {v:g}" for k, v in scores.items()),
        }
    return rdf


def package_path(path: str | Path) -> Path:
    """``path`` with ``.zip`` appended when missing (``nuclei`` -> ``nuclei.zip``)."""
    path = Path(path)
    return path if path.suffix.lower() == ".zip" else path.with_name(path.name + ".zip")


def export_bioimageio(model: Model, path: str | Path, *,
                      image: ArrayLike | str | Path | None = None, axes: Optional[str] = None,
                      overwrite: bool = False) -> Path:
    """Write ``model`` as a bioimage.io model package: a zip (``.zip`` appended when
    missing) written atomically; an existing file is refused before any work unless
    ``overwrite``. ``image`` gives the test tensors and the cover (an array with ``axes``,
    a file, a sample name; default :func:`default_sample`). The caller's model is not
    changed: a copy is exported."""
    path = package_path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        model = model.copy()
        model.network.cpu().float().eval()
        plane = test_image(image, model, axes)
        probs = _probabilities(model, plane)
        files = {
            _ARCHITECTURE: (resources.files("napari_unet") / _ARCHITECTURE).read_bytes(),
            "weights.pt": _state_dict(model),
            "weights.torchscript.pt": _torchscript(model),
            "test_input.npy": _npy(plane[None]),
            "test_output.npy": _npy(probs),
            "cover.png": _cover(model, plane, probs),
        }
        rdf = build_rdf(model, files, (1, *plane.shape))
        files["README.md"] = _readme(model, _scores(model.config.provenance),
                                     _training_data(model.config.provenance)).encode()
        files[RDF_NAMES[0]] = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode()
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in (RDF_NAMES[0], *sorted(set(files) - {RDF_NAMES[0]})):
                # weights barely compress (seconds for a few %); the rest is deflated
                zf.writestr(name, files[name], compress_type=zipfile.ZIP_STORED
                            if name.endswith(".pt") else zipfile.ZIP_DEFLATED)
    return path


# ------------------------------------------------------------------------------- import
class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases: a few lines of aliases can stand
    for billions of nodes, and a description needs none."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not accepted in a description")
        return super().compose_node(parent, index)


class _Package:
    """The files of a package (a zip or a folder), read with a size limit each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: Optional[zipfile.ZipFile] = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile, ValueError) as exc:
                raise ModelFileError(f"{path} is not a readable zip file ({exc}); it may be "
                                     "truncated: copy it again") from None

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def names(self) -> set[str]:
        if self.zip is not None:
            return set(self.zip.namelist())
        return {p.name for p in self.path.iterdir() if p.is_file()}

    def read(self, name: Any, limit: int, what: str) -> bytes:
        """File ``name`` of the package, refused before it is read when it is not a plain
        file name inside it, or holds (or its zip entry declares) more than ``limit`` bytes."""
        if not (isinstance(name, str) and name and "/" not in name and "\\" not in name
                and name not in (".", "..") and ":" not in name):
            raise ModelFileError(f"{self.path}: the {what} is {str(name)[:80]!r}, not the name "
                                 "of a file in the package; napari-unet reads only files "
                                 "inside it (no URLs, no folders)")
        try:
            if self.zip is not None:
                size = self.zip.getinfo(name).file_size
            else:
                file = self.path / name
                if file.is_symlink() or not file.is_file():
                    raise KeyError(name)
                size = file.stat().st_size
            if size > limit:
                raise ModelFileError(
                    f"{self.path}: the {what} {name} holds {size:,} bytes, more than the "
                    f"{limit:,} it can hold; the package is damaged or not a napari-unet export")
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path / name).read_bytes()
        except KeyError:
            raise ModelFileError(f"{self.path}: the {what} {name} is missing from the "
                                 "package; it is incomplete: export it again") from None
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: cannot read the {what} {name} ({exc}); the "
                                 "package is damaged: copy or export it again") from None


def is_bioimageio_package(path: str | Path) -> bool:
    """Whether ``path`` looks like a bioimage.io package: a ``.zip`` file, or a folder with
    a ``bioimageio.yaml`` or ``rdf.yaml``."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    return path.suffix.lower() == ".zip"


def _description(package: _Package) -> dict[str, Any]:
    names = package.names()
    name = next((n for n in RDF_NAMES if n in names), None)
    if name is None:
        raise ModelFileError(f"{package.path} is not a bioimage.io package (it has no "
                             f"{' or '.join(RDF_NAMES)}); choose a package's zip or folder")
    text = package.read(name, MAX_RDF_BYTES, "description")
    try:
        rdf = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{package.path}: its {name} is not readable YAML "
                             f"({str(exc)[:120]}); the package is damaged") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(f"{package.path}: its {name} does not describe a model; choose a "
                             "bioimage.io model package")
    return rdf


def _ours(rdf: dict[str, Any], path: Path) -> dict[str, Any]:
    """The napari-unet section of a description, or why napari-unet cannot run it."""
    config = rdf.get("config")
    ours = config.get("napari_unet") if isinstance(config, dict) else None
    if not isinstance(ours, dict) or ours.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{path} is a bioimage.io model that napari-unet did not export (no "
            "config.napari_unet section); napari-unet runs only its own U-Nets, and never "
            "the code a package carries: use bioimageio.core or the tool that made it")
    version = ours.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: config.napari_unet.format_version is "
                             f"{str(version)[:40]!r}, not a version number; the package is damaged")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} uses napari-unet model format version {version}, newer "
                             f"than this napari-unet reads ({FORMAT_VERSION}); upgrade napari-unet")
    return ours


def _state_dict_entry(rdf: dict[str, Any], path: Path, config_network: Any) -> Any:
    """The ``pytorch_state_dict`` weights' file name, once its architecture is ours with
    the network the config describes."""
    weights = rdf.get("weights")
    entry = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), dict):
        raise ModelFileError(f"{path} has no pytorch_state_dict weights with an architecture; "
                             "napari-unet reads only those: export the model again")
    architecture = entry["architecture"]
    if architecture.get("callable") != "UNetArchitecture" or \
            architecture.get("kwargs") != config_network:
        raise ModelFileError(
            f"{path}: the architecture of its weights ({str(architecture.get('callable'))[:40]} "
            f"with {str(architecture.get('kwargs'))[:120]}) is not the network its "
            "config.napari_unet describes; the package was edited or damaged: export it again")
    return entry.get("source")


def _read_state_dict(data: bytes, limit: int, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``torch.save`` bytes without running pickled code: the archive's
    declared sizes first (a zip inside the package), then ``weights_only`` unpickling."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ModelFileError(f"{path}: its weights are not a PyTorch archive ({exc}); the "
                             "package is damaged: export it again") from None
    if declared > limit:
        raise ModelFileError(f"{path}: its weights declare {declared:,} bytes, more than the "
                             f"{limit:,} its network can hold; the package is damaged")
    try:
        tensors = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (the unpickler raises many kinds; all are refusals)
        raise ModelFileError(f"{path}: its weights are not a plain state dict "
                             f"({type(exc).__name__}: {str(exc)[:120]}); napari-unet loads no "
                             "pickled code: export the model again") from None
    if not (isinstance(tensors, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items())):
        raise ModelFileError(f"{path}: its weights are not a mapping of names to tensors; the "
                             "package is damaged: export it again")
    return tensors


def load_bioimageio(path: str | Path) -> Model:
    """The napari-unet model in a bioimage.io package (a zip, or a folder with its
    description) that napari-unet exported; a :class:`ModelFileError` for anything else.
    The config is checked by the config rules and the weights against the network it
    describes; no code from the package runs."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model package {path} does not exist; check the path")
    package = _Package(path)
    try:
        rdf = _description(package)
        ours = _ours(rdf, path)
        # the config first: it bounds the size of the weights read next
        config = config_from_data(ours.get("config"), path)
        source = _state_dict_entry(rdf, path, asdict(config.network))
        limit = 8 * config.network.parameter_count + (1 << 20)  # fp32 weights, buffers, headers
        tensors = _read_state_dict(package.read(source, limit, "weights file"), limit, path)
    finally:
        package.close()
    name = ours.get("name")
    return model_from_parts(config, tensors,
                            name if isinstance(name, str) and name else path.stem, path)


__all__ = ["export_bioimageio", "load_bioimageio", "is_bioimageio_package", "default_sample",
           "package_path"]
