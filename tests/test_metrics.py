"""Tests for napari_unet.metrics: hand-made cases, real DSB masks, properties."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from napari_unet.errors import InvalidLabelsError
from napari_unet.metrics import (
    DEFAULT_THRESHOLDS,
    MatchCounts,
    adapted_rand_error,
    cells_from_membrane,
    foreground_iou,
    match_instances,
    pixel_error,
    validate_labels,
)
from napari_unet.scores import ImageScores, score_image, scores_table, summarise


@pytest.fixture
def dsb_masks(real_data: Path) -> Path:
    return real_data / "dsb2018_fluo" / "test" / "masks"


@pytest.fixture
def isbi_masks(real_data: Path) -> Path:
    return real_data / "isbi2012_em_membrane" / "train" / "masks"


def _read_mask(masks: Path, stem: str) -> np.ndarray:
    return np.asarray(tifffile.imread(masks / f"{stem}.tif"))


def _counts(c: MatchCounts) -> tuple[int, int, int]:
    return c.tp, c.fp, c.fn


# --------------------------------------------------------------------------- hand-made


def test_default_thresholds() -> None:
    assert DEFAULT_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_perfect_match() -> None:
    t = np.zeros((20, 20), np.uint8)
    t[2:6, 2:6] = 1
    t[10:15, 8:18] = 2
    res = match_instances(t, t)
    assert [c.threshold for c in res] == list(DEFAULT_THRESHOLDS)
    for c in res:
        assert _counts(c) == (2, 0, 0)
        assert c.accuracy == c.f1 == c.precision == c.recall == 1.0


def test_one_object_split_in_two() -> None:
    t = np.zeros((10, 20), np.int32)
    t[2:8, 2:18] = 1  # 6 x 16 = 96 px
    p = np.zeros_like(t)
    p[2:8, 2:12] = 1  # 60 px -> IoU 0.625 with the true object
    p[2:8, 12:18] = 2  # 36 px -> IoU 0.375
    res = {c.threshold: c for c in match_instances(t, p)}
    assert _counts(res[0.5]) == (1, 1, 0)
    assert _counts(res[0.6]) == (1, 1, 0)
    assert _counts(res[0.65]) == (0, 2, 1)
    assert res[0.5].accuracy == pytest.approx(0.5)
    assert res[0.5].f1 == pytest.approx(2 / 3)
    assert res[0.65].accuracy == 0.0


def test_empty_vs_nonempty() -> None:
    empty = np.zeros((8, 8), np.uint16)
    one = empty.copy()
    one[1:4, 1:4] = 7
    (both,) = match_instances(empty, empty, thresholds=[0.5])
    assert _counts(both) == (0, 0, 0)
    assert both.accuracy == both.f1 == both.precision == both.recall == 1.0
    (missed,) = match_instances(one, empty, thresholds=[0.5])
    assert _counts(missed) == (0, 0, 1)
    assert missed.accuracy == missed.f1 == missed.recall == missed.precision == 0.0
    (spurious,) = match_instances(empty, one, thresholds=[0.5])
    assert _counts(spurious) == (0, 1, 0)
    assert spurious.accuracy == 0.0
    assert foreground_iou(empty, empty) == 1.0
    assert foreground_iou(one, empty) == 0.0


def test_shifted_object_known_iou_straddles_thresholds() -> None:
    # A 10 x 20 box shifted by 5 columns: intersection 150, union 250, IoU exactly 0.6.
    t = np.zeros((12, 40), np.uint8)
    t[1:11, 5:25] = 1
    p = np.zeros_like(t)
    p[1:11, 10:30] = 3
    res = {c.threshold: c for c in match_instances(t, p)}
    for thr in (0.5, 0.55, 0.6):  # 0.6 included: the convention is IoU >= threshold
        assert _counts(res[thr]) == (1, 0, 0), thr
    for thr in (0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
        assert _counts(res[thr]) == (0, 1, 1), thr
    assert foreground_iou(t, p) == pytest.approx(150 / 250)


def test_non_consecutive_ids_and_dtypes() -> None:
    t = np.zeros((10, 10), np.uint16)
    t[0:3, 0:3] = 5
    t[5:9, 5:9] = 60000
    p = np.zeros((10, 10), np.int64)
    p[0:3, 0:3] = 2**40
    p[5:9, 5:9] = 17
    p[8:10, 0:2] = 3  # spurious object
    (c,) = match_instances(t, p, thresholds=[0.9])
    assert _counts(c) == (2, 1, 0)
    # Same result from float labels and from relabelled (consecutive) ids.
    consecutive = np.unique(p, return_inverse=True)[1].reshape(p.shape)
    (c2,) = match_instances(t.astype(np.float32), consecutive, thresholds=[0.9])
    assert _counts(c2) == (2, 1, 0)


def test_hungarian_beats_greedy_below_half() -> None:
    # 1-D layout repeated over rows: A=[0,10) B=[10,20); X=[4,14) Y=[0,4).
    # IoU(A,X)=6/14~0.43 (the best pair), IoU(A,Y)=0.4, IoU(B,X)=4/16=0.25, IoU(B,Y)=0.
    # Greedy takes A-X first and ends with 1 match; the optimum is A-Y + B-X = 2 matches.
    t = np.zeros((3, 20), np.uint8)
    t[:, 0:10] = 1
    t[:, 10:20] = 2
    p = np.zeros_like(t)
    p[:, 4:14] = 1
    p[:, 0:4] = 2
    res = {c.threshold: c for c in match_instances(t, p, thresholds=[0.2, 0.25, 0.3, 0.41, 0.5])}
    assert _counts(res[0.2]) == (2, 0, 0)
    assert _counts(res[0.25]) == (2, 0, 0)  # IoU(B,X) == 0.25 exactly counts (>=)
    assert _counts(res[0.3]) == (1, 1, 1)
    assert _counts(res[0.41]) == (1, 1, 1)
    assert _counts(res[0.5]) == (0, 2, 2)


def test_exact_half_split_is_one_to_one() -> None:
    # A true object split exactly in half plus a predicted half: IoU(B, half) == 0.5 for two
    # predictions, but only one may match.
    t = np.zeros((4, 8), np.uint8)
    t[:, 0:8] = 1
    p = np.zeros_like(t)
    p[:, 0:4] = 1
    p[:, 4:8] = 2
    (c,) = match_instances(t, p, thresholds=[0.5])
    assert _counts(c) == (1, 1, 0)


def test_bad_thresholds() -> None:
    t = np.ones((3, 3), np.uint8)
    for bad in ([], [0.0], [1.5], [-0.1]):
        with pytest.raises(ValueError):
            match_instances(t, t, thresholds=bad)


# --------------------------------------------------------------------------- validation


def test_shape_mismatch_raises() -> None:
    a = np.zeros((5, 5), np.uint8)
    b = np.zeros((5, 6), np.uint8)
    for fn in (match_instances, foreground_iou, adapted_rand_error):
        with pytest.raises(InvalidLabelsError, match="shape"):
            fn(a, b)
    with pytest.raises(InvalidLabelsError, match="shape"):
        pixel_error(a, b)


def test_validate_labels() -> None:
    ints = np.array([[0, 3], [4, 0]], np.int16)
    assert validate_labels(ints, "x") is ints
    out = validate_labels(np.array([[0.0, 2.0]]), "x")
    assert out.dtype.kind == "i" and out.tolist() == [[0, 2]]
    assert validate_labels(np.array([True, False]), "x").tolist() == [1, 0]
    with pytest.raises(InvalidLabelsError, match="negative"):
        validate_labels(np.array([[0, -1]]), "my labels")
    with pytest.raises(InvalidLabelsError, match="non-integer"):
        validate_labels(np.array([[0.0, 0.5]]), "x")
    with pytest.raises(InvalidLabelsError, match="NaN"):
        validate_labels(np.array([[0.0, np.nan]]), "x")
    with pytest.raises(InvalidLabelsError, match="dtype"):
        validate_labels(np.array(["a", "b"]), "x")
    with pytest.raises(InvalidLabelsError, match="scalar"):
        validate_labels(np.int32(3), "x")
    with pytest.raises(InvalidLabelsError, match="pred"):
        match_instances(np.zeros((2, 2), np.uint8), np.array([[0, -2], [0, 0]]))


def test_pixel_error_and_cells_from_membrane() -> None:
    a = np.zeros((4, 5), bool)
    a[:, 2] = True  # a vertical membrane splitting two cells
    b = a.copy()
    b[0, 0] = True
    assert pixel_error(a, a) == 0.0
    assert pixel_error(a, b) == pytest.approx(1 / 20)
    assert pixel_error(a.astype(np.uint8) * 255, b) == pytest.approx(1 / 20)
    with pytest.raises(InvalidLabelsError, match="binary"):
        pixel_error(np.linspace(0, 1, 20).reshape(4, 5), a)
    cells = cells_from_membrane(a)
    assert cells.dtype == np.int32
    assert set(np.unique(cells)) == {0, 1, 2}
    assert (cells[:, 2] == 0).all()
    # 4-connectivity: a diagonal gap in the membrane does not join the cells.
    diag = np.array([[0, 1], [1, 0]], bool)
    assert cells_from_membrane(diag).max() == 2


# --------------------------------------------------------------------------- adapted Rand


def test_adapted_rand_identical_and_merged() -> None:
    t = np.zeros((10, 10), np.int32)
    t[0:5, 0:5] = 1
    t[5:10, 5:10] = 2
    t[0:4, 6:10] = 3
    assert adapted_rand_error(t, t) == pytest.approx(0.0)
    relabelled = np.where(t > 0, t * 11 + 100, 0)
    assert adapted_rand_error(t, relabelled) == pytest.approx(0.0)
    merged = np.where(t == 2, 1, t)
    err = adapted_rand_error(t, merged)
    assert 0.0 < err < 1.0
    # Predicted background inside a true cell: singletons, so it costs something but no merge.
    holes = t.copy()
    holes[0:2, 0:5] = 0
    assert 0.0 < adapted_rand_error(t, holes) < err
    assert adapted_rand_error(np.zeros_like(t), t) == 0.0  # nothing to score


def test_adapted_rand_on_isbi_membrane(isbi_masks: Path) -> None:
    from skimage.io import imread

    mask = imread(isbi_masks / "0.png")
    membrane = mask == 0
    cells = cells_from_membrane(membrane)
    assert cells.max() > 50
    assert adapted_rand_error(cells, cells) == pytest.approx(0.0)
    # Thicker predicted membranes: some error, but much less than merging everything.
    thick = cells_from_membrane(ndi.binary_dilation(membrane))
    one_cell = (cells > 0).astype(np.int32)
    e_thick = adapted_rand_error(cells, thick)
    assert 0.0 < e_thick < adapted_rand_error(cells, one_cell)
    assert pixel_error(membrane, ndi.binary_dilation(membrane)) > 0.0


# --------------------------------------------------------------------------- real DSB masks

DSB_STEMS = [
    "57d88f45e479ce3821839b2706d667758c63ac769d76800d815c73d2507c1e42",  # 256x256, 44 nuclei
    "07fb37aafa6626608af90c1e18f6a743f29b6b233d2e427dcd1102df6a916cf5",  # 520x696, 313 nuclei
    "c901794d1a421d52e5734500c0a2a8ca84651fb93b19cec2f411855e70cae339",  # 1040x1388, 14
]


@pytest.mark.parametrize("stem", DSB_STEMS)
def test_dsb_mask_against_itself(dsb_masks: Path, stem: str) -> None:
    m = _read_mask(dsb_masks, stem)
    n = len(np.unique(m[m > 0]))
    for c in match_instances(m, m):
        assert _counts(c) == (n, 0, 0)
        assert c.accuracy == 1.0
    assert foreground_iou(m, m) == 1.0
    assert adapted_rand_error(m, m) == pytest.approx(0.0, abs=1e-12)


def _perturb(m: np.ndarray, seed: int) -> np.ndarray:
    """Erode every nucleus, drop a few, split one and relabel with scattered ids."""
    rng = np.random.default_rng(seed)
    ids = np.unique(m[m > 0])
    out = np.zeros(m.shape, np.int64)
    new_ids = rng.choice(np.arange(1, 10**6), size=2 * ids.size + 2, replace=False)
    for k, obj in enumerate(ids):
        if k % 9 == 4:
            continue  # missed nucleus
        mask = m == obj
        iters = int(rng.integers(0, 3))
        if iters:
            eroded = ndi.binary_erosion(mask, iterations=iters)
            mask = eroded if eroded.any() else mask
        out[mask] = new_ids[k]
    # Split the largest nucleus in two halves along its rows.
    big = ids[np.argmax([np.count_nonzero(m == i) for i in ids])]
    rows = np.flatnonzero((m == big).any(axis=1))
    lower = (m == big) & (np.arange(m.shape[0])[:, None] >= rows[rows.size // 2])
    out[lower] = new_ids[-1]
    # A spurious blob in an empty corner region.
    ys, xs = np.nonzero(m == 0)
    out[ys[0] : ys[0] + 1, xs[0] : xs[0] + 1] = new_ids[-2]
    return out


def _brute_force(t: np.ndarray, p: np.ndarray, thresholds) -> list[tuple[int, int, int]]:
    """Per-object IoU by explicit masks; for thresholds >= 0.5 matches are one-to-one."""
    t_ids = [i for i in np.unique(t) if i != 0]
    p_ids = [i for i in np.unique(p) if i != 0]
    iou = np.zeros((len(t_ids), len(p_ids)))
    for a, ti in enumerate(t_ids):
        tm = t == ti
        for b, pi in enumerate(p_ids):
            pm = p == pi
            inter = np.count_nonzero(tm & pm)
            if inter:
                iou[a, b] = inter / np.count_nonzero(tm | pm)
    out = []
    for thr in thresholds:
        hit = iou >= thr
        assert (hit.sum(axis=0) <= 1).all() and (hit.sum(axis=1) <= 1).all()
        tp = int(hit.sum())
        out.append((tp, len(p_ids) - tp, len(t_ids) - tp))
    return out


def test_dsb_mask_against_perturbed_matches_brute_force(dsb_masks: Path) -> None:
    m = _read_mask(dsb_masks, DSB_STEMS[0])
    p = _perturb(m, seed=1)
    res = match_instances(m, p)
    expected = _brute_force(m, p, DEFAULT_THRESHOLDS)
    assert [_counts(c) for c in res] == expected
    acc = [c.accuracy for c in res]
    assert 0.5 < acc[0] < 1.0  # most nuclei still match at 0.5
    assert acc == sorted(acc, reverse=True)  # accuracy never rises with the threshold
    assert acc[-1] < acc[0]
    assert 0.5 < foreground_iou(m, p) < 1.0
    assert adapted_rand_error(m, p) > 0.0


def test_dsb_score_table_and_summary(dsb_masks: Path) -> None:
    scores = []
    for k, stem in enumerate(DSB_STEMS[:2]):
        m = _read_mask(dsb_masks, stem)
        scores.append(score_image(stem[:8], m, _perturb(m, seed=k)))
    summary = summarise(scores)
    assert summary["n_images"] == 2
    assert summary["n_true"] == sum(s.n_true for s in scores)
    for k, row in enumerate(summary["per_threshold"]):
        tp = sum(s.counts[k].tp for s in scores)
        fp = sum(s.counts[k].fp for s in scores)
        fn = sum(s.counts[k].fn for s in scores)
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
        assert row["accuracy"] == pytest.approx(tp / (tp + fp + fn))
    rows = scores_table(scores)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    header = buf.getvalue().splitlines()[0].split(",")
    assert header[:5] == ["image", "n_true", "n_pred", "acc@0.5", "f1@0.5"]
    assert header[-3:] == ["acc@0.9", "f1@0.9", "fg_iou"]
    assert len(header) == 3 + 2 * 9 + 1


def test_large_image() -> None:
    rng = np.random.default_rng(0)
    h, w = 1040, 1388
    t = np.zeros((h, w), np.uint16)
    yy, xx = np.ogrid[:h, :w]
    centres = np.stack([rng.integers(20, h - 20, 400), rng.integers(20, w - 20, 400)], 1)
    for k, (cy, cx) in enumerate(centres, 1):
        y0, x0 = cy - 12, cx - 12
        sub = (yy[y0 : y0 + 25] - cy) ** 2 + (xx[:, x0 : x0 + 25] - cx) ** 2 < 144
        t[y0 : y0 + 25, x0 : x0 + 25][sub] = k
    p = np.roll(t, 2, axis=1).astype(np.int32) * 3
    res = match_instances(t, p)
    assert res[0].tp > 300


# --------------------------------------------------------------------------- properties


def test_match_counts_arithmetic() -> None:
    a = MatchCounts(0.5, 3, 1, 2)
    b = MatchCounts(0.5, 1, 0, 4)
    assert a + b == MatchCounts(0.5, 4, 1, 6)
    assert sum([a, b]) == a + b
    with pytest.raises(ValueError):
        a + MatchCounts(0.6, 0, 0, 0)
    assert a.n_true == 5 and a.n_pred == 4
    assert a.f1 == pytest.approx(6 / 9)


def test_summary_rejects_mixed_thresholds() -> None:
    s1 = ImageScores("a", 1, 1, [MatchCounts(0.5, 1, 0, 0)], 1.0)
    s2 = ImageScores("b", 1, 1, [MatchCounts(0.7, 1, 0, 0)], 1.0)
    with pytest.raises(ValueError):
        summarise([s1, s2])
    with pytest.raises(ValueError):
        summarise([])


label_arrays = arrays(
    dtype=st.sampled_from([np.uint8, np.int32, np.uint16]),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.integers(0, 6),
)


@settings(max_examples=60, deadline=None)
@given(x=label_arrays)
def test_property_self_match(x: np.ndarray) -> None:
    n = len(np.unique(x[x > 0]))
    for c in match_instances(x, x, thresholds=[0.1, 0.5, 0.9, 1.0]):
        assert _counts(c) == (n, 0, 0)
        assert c.accuracy == 1.0


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(label_arrays, st.integers(0, 2**16)), min_size=1, max_size=4))
def test_property_summed_counts(pairs) -> None:
    scores = []
    for k, (x, seed) in enumerate(pairs):
        rng = np.random.default_rng(seed)
        y = np.where(rng.random(x.shape) < 0.2, rng.integers(0, 6, x.shape), x)
        s = score_image(f"img{k}", x, y, thresholds=[0.3, 0.5])
        for c in s.counts:
            assert c.tp + c.fn == s.n_true and c.tp + c.fp == s.n_pred
            assert c.tp <= min(s.n_true, s.n_pred)
        scores.append(s)
    summary = summarise(scores)
    for k, row in enumerate(summary["per_threshold"]):
        total = sum(s.counts[k] for s in scores)
        assert (row["tp"], row["fp"], row["fn"]) == (total.tp, total.fp, total.fn)
        assert row["tp"] + row["fn"] == summary["n_true"]
        assert row["tp"] + row["fp"] == summary["n_pred"]
    assert len(scores_table(scores)) == len(scores)


def _max_matching_brute(t: np.ndarray, p: np.ndarray, thr: float) -> int:
    """Largest one-to-one matching with IoU >= thr, by trying every assignment."""
    from itertools import permutations

    t_ids = [i for i in np.unique(t) if i != 0]
    p_ids = [i for i in np.unique(p) if i != 0]
    ok = np.zeros((len(t_ids), len(p_ids)), bool)
    for a, ti in enumerate(t_ids):
        for b, pi in enumerate(p_ids):
            tm, pm = t == ti, p == pi
            inter = np.count_nonzero(tm & pm)
            ok[a, b] = inter > 0 and inter / np.count_nonzero(tm | pm) >= thr
    if ok.shape[0] > ok.shape[1]:
        ok = ok.T
    best = 0
    for perm in permutations(range(ok.shape[1]), ok.shape[0]):
        best = max(best, sum(ok[r, c] for r, c in enumerate(perm)))
    return best


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=st.integers(0, 5)),
    y=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=st.integers(0, 5)),
)
def test_property_optimal_matching_low_thresholds(x: np.ndarray, y: np.ndarray) -> None:
    y = np.resize(y, x.shape)
    thresholds = [0.1, 0.25, 1 / 3, 0.5]
    got = [c.tp for c in match_instances(x, y, thresholds=thresholds)]
    assert got == [_max_matching_brute(x, y, thr) for thr in thresholds]
