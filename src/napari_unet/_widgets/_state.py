"""Qt-free state of an interactive session: edit masks, stored corrections, model versions.

Nothing here imports Qt or napari, so the logic is unit-tested without a viewer; the
widgets only translate napari events into these calls and show the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..corrections import Correction
from ..model import Model
from ..sessions import ModelVersion

Region = Any  # a tuple of slices, or a tuple of index arrays (numpy fancy index)


class EditTracker:
    """Which pixels of a labels array differ from the last segmentation, and which were reviewed.

    ``baseline`` is a copy of what the model predicted. A pixel is *edited* when its current
    label differs from the baseline (so painting a pixel back to its predicted label, or an
    undo, un-marks it), or when it is a correction carried over a fine-tuning round that the
    new baseline happens to agree with (until an undo re-diffs the layer). A pixel is
    *reviewed* when the user declared it correct as it is ("Mark view as reviewed"). Both
    together form the supervision mask for fine-tuning.
    """

    def __init__(self, baseline: np.ndarray) -> None:
        self.baseline = np.array(baseline, copy=True)
        self.edited = np.zeros(self.baseline.shape, dtype=bool)
        self.reviewed = np.zeros(self.baseline.shape, dtype=bool)
        #: Bumped by every change of the baseline or the masks, so a snapshot taken for a
        #: worker job can tell at delivery whether it is still current.
        self.revision = 0

    @classmethod
    def saved(cls, baseline: np.ndarray, edited: np.ndarray,
              reviewed: np.ndarray) -> EditTracker:
        """A tracker as a session file kept it (the arrays are copied)."""
        tracker = cls(baseline)
        tracker.edited[...] = edited
        tracker.reviewed[...] = reviewed
        return tracker

    @property
    def shape(self) -> tuple[int, ...]:
        return self.baseline.shape

    # ------------------------------------------------------------------ updates
    def set_region(self, region: Region, new_values, mask: Optional[np.ndarray] = None) -> None:
        """Record that ``region`` (optionally only where ``mask``) now holds ``new_values``."""
        self.revision += 1
        base = self.baseline[region]
        changed = np.broadcast_to(np.asarray(new_values) != base, np.shape(base))
        if mask is None:
            self.edited[region] = changed
        else:
            sub = np.array(self.edited[region], copy=True)
            sub[mask] = changed[mask]
            self.edited[region] = sub

    def apply_paint_atoms(self, atoms: Iterable[Any]) -> bool:
        """Update from napari's ``Labels.events.paint`` payload (a list of history atoms).

        napari 0.9 emits two kinds of atoms: a ``_MaskedPaintAtom`` (``slice_key``,
        ``mask`` or ``None`` for the whole box, ``old_values``, ``new_value``) from the
        brush, fill and polygon tools, and a ``(indices, old_values, new_values)`` tuple
        from ``data_setitem``. The event fires *before* napari writes the new values,
        so the new values are taken from the atom, not from the layer's data.
        Returns False when an atom has an unknown shape (the caller then re-diffs).
        """
        ok = True
        self.revision += 1
        for atom in atoms:
            if hasattr(atom, "slice_key") and hasattr(atom, "new_value"):
                key = tuple(atom.slice_key)
                mask = None if atom.mask is None else np.asarray(atom.mask, dtype=bool)
                if mask is not None and mask.shape != self.baseline[key].shape:
                    ok = False
                    continue
                self.set_region(key, atom.new_value, mask)
            elif isinstance(atom, tuple) and len(atom) == 3:
                indices, _old, new = atom
                indices = tuple(np.asarray(i) for i in indices)
                if len(indices) != self.baseline.ndim:
                    ok = False
                    continue
                self.edited[indices] = np.asarray(new) != self.baseline[indices]
            else:
                ok = False
        return ok

    def refresh(self, current: np.ndarray) -> None:
        """Recompute the edit mask by diffing the whole array (after undo/redo or replacement)."""
        current = np.asarray(current)
        if current.shape != self.shape:
            raise ValueError(f"labels shape {current.shape} differs from the tracked {self.shape}")
        self.revision += 1
        np.not_equal(current, self.baseline, out=self.edited)

    def mark_reviewed(self, region: Region = ...) -> int:
        """Mark ``region`` (default: everything) as checked by the user; returns pixels added."""
        before = int(np.count_nonzero(self.reviewed))
        self.revision += 1
        self.reviewed[region] = True
        return int(np.count_nonzero(self.reviewed)) - before

    def rebase(self, labels: np.ndarray, region: Region = ...) -> None:
        """A new segmentation replaced ``region``: it becomes the baseline, with no edits."""
        self.revision += 1
        self.baseline[region] = labels
        self.edited[region] = False
        self.reviewed[region] = False

    # ------------------------------------------------------------------ queries
    @property
    def mask(self) -> np.ndarray:
        """Pixels that count as ground truth: edited or reviewed."""
        return self.edited | self.reviewed

    @property
    def n_edited(self) -> int:
        return int(np.count_nonzero(self.edited))

    @property
    def n_reviewed(self) -> int:
        return int(np.count_nonzero(self.reviewed & ~self.edited))

    @property
    def n_supervised(self) -> int:
        return int(np.count_nonzero(self.mask))

    def supervised_planes(self, n_stack_dims: int) -> list[tuple[int, ...]]:
        """Stack indices (over the first ``n_stack_dims`` axes) holding supervised pixels."""
        if n_stack_dims == 0:
            return [()] if self.mask.any() else []
        axes = tuple(range(n_stack_dims, self.baseline.ndim))
        any_plane = self.mask.any(axis=axes)
        return [tuple(int(i) for i in idx) for idx in np.argwhere(any_plane)]


def merge_corrections(older: Sequence[Correction], new: Correction) -> list[Correction]:
    """The same plane corrected in several rounds: newer supervision wins where they overlap.

    Each round stays its own :class:`Correction`, with its own labels: only the older masks
    shrink. Merging the ids into one array would give an object lying partly in an older and
    partly in a newer round two ids, and a false boundary through it in the training target.
    """
    out = []
    for old in older:
        mask = old.mask & ~new.mask
        if mask.any():
            out.append(replace(old, mask=mask))
    if new.n_supervised:
        out.append(new)
    return out


class CorrectionStore:
    """Corrections of earlier rounds by source name and plane; newer rounds win on overlap."""

    def __init__(self) -> None:
        self._items: dict[str, list[Correction]] = {}

    def add(self, correction: Correction) -> None:
        if correction.n_supervised:
            self._items[correction.name] = merge_corrections(
                self._items.get(correction.name, []), correction)

    def replace(self, corrections: Iterable[Correction]) -> None:
        """Hold only ``corrections`` (merged as :meth:`add` merges them): an opened session's."""
        self._items = {}
        for correction in corrections:
            self.add(correction)

    def by_name(self) -> dict[str, list[Correction]]:
        """The stored rounds of each plane, oldest first (a copy)."""
        return {name: list(rounds) for name, rounds in self._items.items()}

    def __len__(self) -> int:
        return sum(len(rounds) for rounds in self._items.values())

    def __iter__(self):
        return (c for rounds in self._items.values() for c in rounds)

    @property
    def n_supervised(self) -> int:
        return sum(c.n_supervised for c in self)


class ModelVersions:
    """The list of model versions of a session (bases and fine-tuned rounds) and the active one."""

    def __init__(self) -> None:
        self.versions: list[ModelVersion] = []
        self.active: Optional[int] = None

    def __len__(self) -> int:
        return len(self.versions)

    def __getitem__(self, index: int) -> ModelVersion:
        return self.versions[index]

    @property
    def active_version(self) -> Optional[ModelVersion]:
        return None if self.active is None else self.versions[self.active]

    @property
    def active_model(self) -> Optional[Model]:
        version = self.active_version
        return None if version is None else version.model

    def replace(self, versions: Sequence[ModelVersion], active: Optional[int]) -> None:
        """Hold only ``versions``, ``active`` the active one (an opened session's); a
        ValueError, before anything changes, when ``active`` is not one of them."""
        if active is not None and not 0 <= active < len(versions):
            raise ValueError(f"active model version {active} is not one of the "
                             f"{len(versions)} versions")
        self.versions = list(versions)
        self.active = active

    def find_source(self, source: Path) -> Optional[int]:
        for i, version in enumerate(self.versions):
            if version.source is not None and Path(version.source) == Path(source):
                return i
        return None

    def add_base(self, model: Model, source: Optional[Path] = None, label: Optional[str] = None,
                 activate: bool = True) -> int:
        """Register a loaded model (once per file) and, by default, make it active."""
        index = self.find_source(source) if source is not None else None
        if index is None:
            self.versions.append(ModelVersion(label or model.name, model, source=source))
            index = len(self.versions) - 1
        if activate:
            self.active = index
        return index

    def add_round(self, model: Model, parent: int, stats: Optional[dict] = None) -> int:
        """Register a fine-tuned model derived from version ``parent`` and make it active."""
        base = self.versions[parent]
        n = base.round + 1
        root = self._root(parent)
        label = f"{self.versions[root].label} · round {n}"
        while any(v.label == label for v in self.versions):
            n += 1
            label = f"{self.versions[root].label} · round {n}"
        self.versions.append(
            ModelVersion(label, model, parent=parent, round=n, stats=dict(stats or {})))
        self.active = len(self.versions) - 1
        return self.active

    def _root(self, index: int) -> int:
        while self.versions[index].parent is not None:
            index = self.versions[index].parent  # type: ignore[assignment]
        return index

    def activate(self, index: int) -> ModelVersion:
        if not 0 <= index < len(self.versions):
            raise IndexError(f"no model version {index}")
        self.active = index
        return self.versions[index]

    def lineage(self, index: int) -> Sequence[int]:
        """Indices from the base model down to ``index``."""
        chain = [index]
        while self.versions[chain[-1]].parent is not None:
            chain.append(self.versions[chain[-1]].parent)  # type: ignore[arg-type]
        return chain[::-1]
