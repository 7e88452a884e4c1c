"""Training checkpoints: a long run continues where it stopped, in a later sitting.

A shipped model may train for hours on a CPU; a closed laptop or an ended session must
not throw that away. :func:`~napari_unet.training.fit_iter` writes a checkpoint at every
validation (network, optimiser, best weights so far, torch's random state, step and time spent;
the batches need none: each is drawn from a stream seeded by the step)
and continues from one: the run then takes the same remaining steps as if it had never
stopped, and a time budget counts the time of every sitting.

A checkpoint is read as data only (``torch.load(weights_only=True)``: no pickled code can
run) and must belong to the same model and settings; anything else is refused with
:class:`CheckpointError` naming what differs.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import NapariUnetError
from .io import atomic_write

#: Format tag inside every checkpoint, so foreign ``.pt`` files are recognised.
FORMAT = "napari-unet-checkpoint/2"
#: Earlier formats: their runs drew batches from another random stream, so they cannot
#: continue exactly.
_OLD_FORMATS = ("napari-unet-checkpoint/1",)


class CheckpointError(NapariUnetError, ValueError):
    """A checkpoint cannot be continued (damaged, foreign, or from other settings)."""


@dataclass
class TrainState:
    """Everything a run needs to continue exactly: counters, weights, random streams."""

    step: int
    planned: int
    elapsed: float
    best_val: float
    bad_rounds: int
    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_network: dict[str, torch.Tensor] | None
    torch_rng: torch.Tensor
    #: What must not change between sittings: the model's shape and the training settings.
    fingerprint: dict[str, Any]
    #: The report of the step saved (a run continued after its end reports it again).
    last_report: dict[str, Any]


def check_start(path: str | Path | None, resume: bool) -> None:
    """Refuse, before any work, to start a run over an existing checkpoint unasked."""
    if path is not None and not resume and Path(path).exists():
        raise CheckpointError(f"{path} holds an earlier run; pass --resume (resume=True) to "
                              "continue it, or delete it to start afresh")


def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    """Write ``state`` atomically (a crash while writing keeps the previous checkpoint)."""
    payload = {"format": FORMAT, **state.__dict__}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=True)


def load_checkpoint(path: str | Path, fingerprint: dict[str, Any]) -> TrainState:
    """The state saved in ``path``, checked against this run's ``fingerprint``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is not a readable training checkpoint ({type(exc).__name__}); delete it "
            "to start the run afresh") from exc
    if isinstance(payload, dict) and payload.get("format") in _OLD_FORMATS:
        raise CheckpointError(f"{path} was written by an older napari-unet, whose runs cannot "
                              "be continued exactly; delete it to start the run afresh")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-unet training checkpoint; choose "
                              "another --checkpoint file")
    fields = set(TrainState.__dataclass_fields__)
    missing = sorted(fields - set(payload))
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; delete it to start afresh")
    saved = payload["fingerprint"]
    differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differ:
        details = "; ".join(f"{k}: checkpoint {_short(saved.get(k))}, now {_short(fingerprint.get(k))}"
                            for k in differ)
        raise CheckpointError(
            f"{path} was written by a run with other settings ({details}); continue it with "
            "the same command, or delete it to start afresh")
    return TrainState(**{k: payload[k] for k in fields})


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
