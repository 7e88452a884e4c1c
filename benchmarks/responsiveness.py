"""GUI responsiveness: how long the Qt event loop stalls while the widgets work (issue 5).

Opens a real napari viewer (run it under Xvfb on a headless machine), docks the Segment and
Fine-tune widgets as tests/test_widgets.py does, adds the bundled ``nuclei_fluo`` sample
tiled to 2048 x 2048, and runs a 10 ms QTimer probe that records the gap between ticks in
each phase:

* ``idle``: nothing running, 3 s (the floor of this machine + Xvfb);
* ``segment``: click Segment (shipped ``nuclei`` model) until the result is in the layer;
* ``paint``: one brush stroke (``labels.paint``, brush 60) on the 2048 x 2048 labels;
* ``finetune``: click Fine-tune with a 10 s budget, until training, the automatic
  re-segmentation and its delivery are done.

A sampler thread snapshots the main thread's Python stack whenever no tick has come for
40 ms, so each phase also reports *where* the GUI thread was while it stalled; GUI-thread
callbacks of the widgets (``apply_result``, progress/loss slots) are timed too.

    xvfb-run -a .venv/bin/python benchmarks/responsiveness.py --runs 3 --json runs/responsiveness.json

Prints JSON (per run and the median of each statistic over runs) and a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

PHASES = ("idle", "segment", "paint", "finetune")
STALL_S = 0.040  # the sampler snapshots the GUI thread after this long without a tick


class Probe:
    """A 10 ms QTimer whose tick gaps are recorded, plus a stall sampler thread."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.gaps: list[float] = []
        self.samples: collections.Counter = collections.Counter()
        self.calls: dict[str, list[float]] = collections.defaultdict(list)
        self.main_ident = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.timer.start()
        self._thread.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.gaps = []
        self.samples = collections.Counter()
        self.calls = collections.defaultdict(list)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            if time.perf_counter() - self.last < STALL_S:
                continue
            frame = sys._current_frames().get(self.main_ident)
            if frame is not None:
                self.samples[_where(frame)] += 1

    def timed(self, name: str, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - t0)
        return wrapper

    def stats(self) -> dict:
        gaps = np.asarray(self.gaps) * 1000 if self.gaps else np.zeros(1)
        return dict(
            worst_ms=float(gaps.max()),
            p99_ms=float(np.percentile(gaps, 99)),
            median_ms=float(np.median(gaps)),
            ticks=len(self.gaps),
            stalls_over_100ms=int((gaps > 100).sum()),
            stalled_ms_over_100=float(gaps[gaps > 100].sum()),
            blocking_sites=[dict(where=w, samples=n, approx_ms=5 * n)
                            for w, n in self.samples.most_common(6)],
            gui_calls={k: dict(n=len(v), max_ms=1000 * max(v), total_ms=1000 * sum(v))
                       for k, v in self.calls.items()},
        )


def _where(frame) -> str:
    """The innermost frames of the GUI thread's stack, condensed (file:function)."""
    parts = []
    for fs in traceback.extract_stack(frame)[::-1]:
        path = fs.filename
        if "benchmarks/responsiveness.py" in path:
            break
        short = "/".join(Path(path).parts[-2:])
        parts.append(f"{short}:{fs.name}")
        if len(parts) == 4:
            break
    return " < ".join(parts) or "Qt event loop (C++: rendering, or waiting for the GIL)"


def wait_until(app, cond, timeout_s: float) -> bool:
    """Run the Qt event loop until ``cond()`` (checked every 20 ms) or the timeout."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: (cond() or time.perf_counter() > deadline) and loop.quit())
    check.start()
    if not cond():
        loop.exec_() if hasattr(loop, "exec_") else loop.exec()
    check.stop()
    return bool(cond())


def one_run(app, side: int, budget: float, idle_s: float) -> dict:
    import napari

    from napari_unet._widgets import _finetune, _segment
    from napari_unet._widgets._finetune import FineTuneWidget
    from napari_unet._widgets._segment import SegmentWidget
    from napari_unet.sample_data import load_sample

    sample = np.asarray(load_sample("nuclei_fluo").data)
    reps = (-(-side // sample.shape[0]), -(-side // sample.shape[1]))
    image = np.ascontiguousarray(np.tile(sample, reps)[:side, :side])

    viewer = napari.Viewer(show=True)
    seg = SegmentWidget(viewer)
    fine = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    viewer.window.add_dock_widget(fine, name="Fine-tune")
    layer = viewer.add_image(image, name="nuclei")
    seg.image_combo.select(layer)
    assert seg.model_combo.currentText() == "nuclei", seg.model_combo.currentText()
    wait_until(app, lambda: False, 1.5)  # let the window map and draw once

    probe = Probe()
    # GUI-thread work of the widgets, timed (patched where the widgets look them up)
    orig_seg_apply, orig_fine_apply = _segment.apply_result, _finetune.apply_result
    _segment.apply_result = probe.timed("apply_result (segment)", orig_seg_apply)
    _finetune.apply_result = probe.timed("apply_result (re-segment)", orig_fine_apply)
    fine._on_report = probe.timed("fine._on_report", fine._on_report)
    fine.jobs.relay.report.disconnect()
    fine.jobs.relay.report.connect(fine._on_report)
    fine.update_counts = probe.timed("fine.update_counts", fine.update_counts)
    probe.start()
    out: dict = {}
    marks: dict = {}
    try:
        # idle
        probe.reset()
        wait_until(app, lambda: False, idle_s)
        out["idle"] = probe.stats()

        # segment
        probe.reset()
        t0 = time.perf_counter()
        seg.segment_button.click()
        done = wait_until(app, lambda: not seg.running and not seg.session.busy, 300)
        marks["segment_s"] = time.perf_counter() - t0
        out["segment"] = probe.stats()
        labels = viewer.layers["nuclei labels"]
        out["segment"]["ok"] = done and labels.data.shape == image.shape

        # paint one correction
        fine.labels_combo.select(labels)
        wait_until(app, lambda: False, 0.5)
        probe.reset()
        labels.brush_size = 60
        t0 = time.perf_counter()
        labels.paint((side // 2, side // 2), int(labels.data.max()) + 1)
        marks["paint_call_ms"] = 1000 * (time.perf_counter() - t0)
        wait_until(app, lambda: False, 0.5)  # the debounced count update and the redraw
        out["paint"] = probe.stats()
        out["paint"]["gui_calls"]["labels.paint"] = dict(
            n=1, max_ms=marks["paint_call_ms"], total_ms=marks["paint_call_ms"])

        # fine-tune (10 s budget) + automatic re-segmentation
        fine.budget.setValue(budget)
        probe.reset()
        t0 = time.perf_counter()
        fine.finetune_button.click()
        done = wait_until(app, lambda: not fine.running and not fine.session.busy, 300)
        marks["finetune_s"] = time.perf_counter() - t0
        out["finetune"] = probe.stats()
        out["finetune"]["ok"] = done and fine.last_result is not None
        out["finetune"]["steps"] = fine.session.versions[fine.session.versions.active].stats.get("steps")
    finally:
        probe.stop()
        _segment.apply_result, _finetune.apply_result = orig_seg_apply, orig_fine_apply
        viewer.close()
    out["durations"] = marks
    return out


def median_table(runs: list[dict]) -> dict:
    med = {}
    for phase in PHASES:
        rows = [r[phase] for r in runs]
        med[phase] = {k: float(np.median([row[k] for row in rows]))
                      for k in ("worst_ms", "p99_ms", "median_ms", "ticks", "stalls_over_100ms",
                                "stalled_ms_over_100")}
        med[phase]["worst_ms_all_runs"] = [round(row["worst_ms"], 1) for row in rows]
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    # never read or write the user's real model folder
    os.environ.setdefault("NAPARI_UNET_MODEL_DIR", tempfile.mkdtemp(prefix="napari-unet-bench-"))
    import napari  # noqa: F401  (creates the QApplication on first Viewer)
    from napari._qt.qt_event_loop import get_qapp
    from qtpy.QtWidgets import QApplication

    app = get_qapp()
    assert isinstance(app, QApplication)
    runs = []
    for i in range(args.runs):
        run = one_run(app, args.side, args.budget, args.idle)
        print(f"run {i + 1}: " + ", ".join(
            f"{p} worst {run[p]['worst_ms']:.0f} ms" for p in PHASES), file=sys.stderr, flush=True)
        runs.append(run)
    result = dict(side=args.side, budget_s=args.budget, runs=runs, median=median_table(runs))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))

    med = result["median"]
    print()
    print(f"Medians of {args.runs} runs, {args.side} x {args.side} plane, 10 ms QTimer probe.")
    print()
    print("| phase | worst stall ms | p99 gap ms | median gap ms | ticks | gaps > 100 ms | "
          "worst per run ms |")
    print("|---|---|---|---|---|---|---|")
    for p in PHASES:
        m = med[p]
        print(f"| {p} | {m['worst_ms']:.0f} | {m['p99_ms']:.0f} | {m['median_ms']:.1f} | "
              f"{m['ticks']:.0f} | {m['stalls_over_100ms']:.0f} | "
              f"{', '.join(f'{w:.0f}' for w in m['worst_ms_all_runs'])} |")
    print()
    print("Where the GUI thread was during stalls (last run, 5 ms samples while > 40 ms "
          "without a tick), and timed GUI-thread calls:")
    last = runs[-1]
    for p in PHASES:
        print(f"\n{p}:")
        for site in last[p]["blocking_sites"][:4]:
            print(f"  ~{site['approx_ms']} ms  {site['where']}")
        for name, c in last[p]["gui_calls"].items():
            print(f"  call {name}: n={c['n']}, max {c['max_ms']:.0f} ms, total {c['total_ms']:.0f} ms")


if __name__ == "__main__":
    main()
