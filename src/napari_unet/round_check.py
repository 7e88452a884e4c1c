"""The guardrail after a fine-tuning round: is the new version better on what the user said?

Measured on the corrected images against the previous version: how many of the user's
fixes each version reproduces (object level), how much of the area nobody corrected changed
between object and background, and how much of its background became objects. A round
that gets fewer fixes right, or that turns most of the untouched background into objects
while getting at most half of the fixes right (a model that collapsed to "everything is an
object"), is refused. A large change that gets the fixes right is what a good round does in
a new domain: dense tissue covers most of an image, and a previous version may have
labelled the background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from .domain import supervised_objects
from .metrics import iou_pairs

#: A round that turns more than this share of the uncorrected background into objects is suspect.
MAX_GROWTH = 0.5
#: Share of the fixes a round may lose against the previous version before it counts as
#: worse (0 for fewer than 20 fixes): one object of a fully reviewed region is noise.
SLACK = 0.05
#: Erased/reviewed background regions smaller than this (pixels) are not counted as fixes.
MIN_REGION = 10


@dataclass(frozen=True)
class FixCount:
    """How many of the user's fixes one prediction reproduces."""

    fixes: int
    held: int


def fixes_held(prediction: np.ndarray, corrected: np.ndarray, mask: np.ndarray) -> FixCount:
    """Count the fixes ``prediction`` gets right.

    A fix is an object of ``corrected`` lying mostly inside ``mask`` (held when a predicted
    object matches it at IoU >= 0.5), or a connected region of background inside the mask
    (erased or reviewed; held when predicted objects cover less than half of it).
    """
    pred = np.asarray(prediction)
    corr = np.asarray(corrected)
    mask = np.asarray(mask, dtype=bool)
    ids = supervised_objects(corr, mask)
    held = 0
    if ids.size:
        truth = np.where(np.isin(corr, ids), corr, 0)
        true_ids, _pred_ids, i, _j, iou = iou_pairs(truth, pred)
        held += len(set(true_ids[i[iou >= 0.5]].tolist()))
    regions, n = ndi.label(mask & (corr == 0))
    n_regions = 0
    if n:
        area = np.bincount(regions.ravel())
        covered = np.bincount(regions.ravel(), weights=(pred > 0).ravel(), minlength=area.size)
        big = np.flatnonzero(area >= MIN_REGION)
        big = big[big > 0]
        n_regions = int(big.size)
        held += int(np.count_nonzero(covered[big] * 2 < area[big]))
    return FixCount(int(ids.size) + n_regions, held)


@dataclass(frozen=True)
class RoundCheck:
    """The previous and the new version compared on the corrected images."""

    fixes: int
    held_before: int
    held_after: int
    #: Share of the pixels nobody corrected whose class (object or background) changed.
    changed: float
    #: Share of the uncorrected pixels the previous version called background that the new
    #: version calls object.
    grown: float
    accepted: bool
    reason: str

    def summary(self) -> str:
        return (f"corrected objects right {self.held_after}/{self.fixes} (previous version "
                f"{self.held_before}/{self.fixes}); {100 * self.changed:.1f}% of the "
                f"uncorrected area changed")

    def to_dict(self) -> dict:
        return asdict(self)


def check_round(previous: Sequence[np.ndarray], new: Sequence[np.ndarray],
                corrected: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                max_growth: float = MAX_GROWTH) -> RoundCheck:
    """Compare two versions' labels over corrected planes (lists of arrays, one per plane)."""
    fixes = before = after = 0
    changed = untouched = grown = background = 0
    for prev, cur, corr, mask in zip(previous, new, corrected, masks):
        mask = np.asarray(mask, dtype=bool)
        b = fixes_held(prev, corr, mask)
        a = fixes_held(cur, corr, mask)
        fixes += a.fixes
        before += b.held
        after += a.held
        free = ~mask
        was, now = np.asarray(prev) > 0, np.asarray(cur) > 0
        untouched += int(np.count_nonzero(free))
        changed += int(np.count_nonzero((was != now) & free))
        background += int(np.count_nonzero(free & ~was))
        grown += int(np.count_nonzero(free & ~was & now))
    share = changed / untouched if untouched else 0.0
    growth = grown / background if background else 0.0
    if after < before - int(SLACK * fixes):
        accepted = False
        reason = (f"it gets {after} of your {fixes} corrected objects right, the previous "
                  f"version got {before}")
    elif growth > max_growth and 2 * after <= fixes:
        accepted = False
        reason = (f"it turned {100 * growth:.0f}% of the background you did not correct into "
                  f"objects and gets only {after} of your {fixes} corrected objects right")
    else:
        accepted = True
        reason = ("it gets more of your corrected objects right" if after > before
                  else "it keeps your corrections")
    return RoundCheck(fixes, before, after, share, growth, accepted, reason)
