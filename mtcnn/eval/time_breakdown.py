"""Where a detect call spends its time: the README's "where the time goes" table.

:func:`time_breakdown` runs the detector's own ``detect`` and attributes wall time to its parts
by wrapping, for the duration of the measurement only, the stage functions the detector calls
(``run_pnet`` / ``run_rnet`` / ``run_onet``), the pieces inside them (``_paint_canvas``,
``crop_candidates``, ``_forward_chunks``) and P-Net itself. Nothing is re-implemented, so the
figures are those of the real code path; each wrapper costs two ``perf_counter`` calls.

Parts (ms per call, medians over the timed calls; "rest" is a stage's time outside its named
parts: cell decoding, softmax, NMS, box calibration, Python):

* P-Net: ``canvases`` (antialiased pyramid resizes), ``forward``, ``rest``;
* R-Net and O-Net: ``crops`` (square, cut, resize, normalise), ``forward`` (all chunks, including
  :class:`~mtcnn.ops.inference.CheckedNet`'s float32 re-runs), ``rest``;
* ``outside stages``: image conversion, the optional landmark model, splitting per image.

With the detector's two lanes (``lanes``, :mod:`mtcnn.ops.lanes`) a part's time is summed over
both lanes, so the parts of a stage can add up to more than its wall time ("rest" then reads
negative); run a detector with ``lanes=False`` to see where the work goes, and compare totals.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import mtcnn.detector as detector_module
import mtcnn.stages as stages

__all__ = ["TimeBreakdown", "time_breakdown"]


@dataclass
class TimeBreakdown:
    """Median ms per detect call by part, the median total, and the windows each stage scored."""

    parts: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    windows: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def format_table(self) -> str:
        lines = ["| part | ms | share |", "|---|---|---|"]
        for name, ms in self.parts.items():
            lines.append(f"| {name} | {ms:.1f} | {100 * ms / self.total_ms:.0f} % |")
        lines.append(f"| **total** | **{self.total_ms:.1f}** | |")
        return "\n".join(lines)


class _Clock:
    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.windows: dict[str, int] = {}
        self._lock = threading.Lock()  # parts run in two lanes add up from two threads

    def wrap(self, key: str, fn: Callable, count_arg: int | None = None) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.spent[key] += time.perf_counter() - start
                if count_arg is not None:
                    self.windows[key] = len(args[count_arg])

        return timed


class _TimedNet:
    """A net stand-in that times its calls; everything else goes to the wrapped net."""

    def __init__(self, net, clock: _Clock, key: str):
        self._net, self._call = net, clock.wrap(key, net)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._net, name)


@contextmanager
def _instrumented(detector, clock: _Clock):
    saved_stages = {name: getattr(stages, name) for name in ("_paint_canvas", "crop_candidates", "_forward_chunks")}
    saved_detector = {name: getattr(detector_module, name) for name in ("run_pnet", "run_rnet", "run_onet")}
    saved_pnet = detector.pnet
    current = {"stage": "P-Net"}

    def stage(name: str, fn: Callable) -> Callable:
        timed = clock.wrap(name, fn, count_arg=2 if name != "P-Net" else None)

        def run(*args, **kwargs):
            current["stage"] = name
            return timed(*args, **kwargs)

        return run

    def per_stage(part: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            return clock.wrap(f"{current['stage']} {part}", fn)(*args, **kwargs)

        return run

    try:
        stages._paint_canvas = clock.wrap("P-Net canvases", saved_stages["_paint_canvas"])
        stages.crop_candidates = per_stage("crops", saved_stages["crop_candidates"])
        stages._forward_chunks = per_stage("forward", saved_stages["_forward_chunks"])
        for name, label in (("run_pnet", "P-Net"), ("run_rnet", "R-Net"), ("run_onet", "O-Net")):
            setattr(detector_module, name, stage(label, saved_detector[name]))
        detector.pnet = _TimedNet(saved_pnet, clock, "P-Net forward")
        yield
    finally:
        for name, fn in saved_stages.items():
            setattr(stages, name, fn)
        for name, fn in saved_detector.items():
            setattr(detector_module, name, fn)
        detector.pnet = saved_pnet


_ORDER = (
    ("P-Net", ("canvases", "forward")),
    ("R-Net", ("crops", "forward")),
    ("O-Net", ("crops", "forward")),
)


def time_breakdown(detector, images: Sequence, repeats: int = 15, warmup: int = 3) -> TimeBreakdown:
    """Median time per ``detector.detect(images)`` call and per part (see the module docstring).

    The detector's behaviour is unchanged (the wrappers only time), and everything wrapped is
    restored on return, also after an exception."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    images = list(images)
    samples: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    windows: dict[str, int] = {}
    for call in range(warmup + repeats):
        clock = _Clock()
        with _instrumented(detector, clock):
            start = time.perf_counter()
            detector.detect(images)
            total = time.perf_counter() - start
        if call < warmup:
            continue
        totals.append(total)
        windows = dict(clock.windows)
        staged = 0.0
        for stage, named in _ORDER:
            stage_time = clock.spent.get(stage, 0.0)
            staged += stage_time
            inside = 0.0
            for part in named:
                spent = clock.spent.get(f"{stage} {part}", 0.0)
                inside += spent
                samples[f"{stage} {part}"].append(spent)
            samples[f"{stage} rest"].append(stage_time - inside)
        samples["outside stages"].append(total - staged)
    ms = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    return TimeBreakdown(parts=ms, total_ms=1e3 * statistics.median(totals), windows=windows, calls=repeats)
