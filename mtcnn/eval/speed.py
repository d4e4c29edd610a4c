"""Detector speed benchmark: milliseconds per image and peak memory by resolution, minimum face
size, batch size and device, optionally against facenet-pytorch's MTCNN (the reference port).

:func:`run_benchmark` returns a :class:`BenchmarkResult` (dataclasses, ``to_dict()`` for JSON,
``format_table()`` for the console); ``mtcnn.commands.benchmark`` prints the table, writes the JSON and turns errors into exit codes.

Timing: every case runs ``warmup`` untimed detect calls, then ``repeats`` timed ones
(``time.perf_counter``, CUDA synchronised before and after); a call on a batch of B copies of
the image counts as B images, so ms per image = call time / B. Reported: median, p10, p90.

Peak memory of a case (``memory="isolated"``, the default): each case (one size, min face,
batch size, device, backend, precision) runs in a fresh child process (multiprocessing "spawn"),
which builds the detector from the PyTorch nets, notes its resident set (``VmRSS``) after imports
and model load, resets its high-water mark (``5`` to ``/proc/self/clear_refs``), runs the case's
detect calls and reads ``VmHWM``: the operating system's count, so it sees every allocator
(PyTorch's, oneDNN's bfloat16 kernels, onnxruntime's arenas, glibc). Reported: ``peak_rss_mb``
(the child's peak), ``baseline_rss_mb`` and ``peak_mem_mb`` = peak above baseline. Where the mark
cannot be reset the peak includes loading (``mem_method`` says so); off Linux it is the child's
``getrusage(RUSAGE_SELF).ru_maxrss``. On a GPU ``gpu_peak_mb`` adds
``torch.cuda.max_memory_allocated`` above what was allocated before the case (tensors only).
A child costs about 2 s to start (imports, model build), so ``memory="off"`` runs every case in
this process with no memory figures. Timings are taken the same way in both modes (the same
warm-up and timed calls, the same thread count), in the child when isolated, so they compare.
A process that had run other cases cannot do this: memory freed by an earlier case stays resident
(glibc arenas, oneDNN and onnxruntime caches), so a later case's growth read near 0.

With ``regression=True`` the benchmark adds the photo that once flooded P-Net
(:data:`REGRESSION_CASE`: ``regressions/led_wall_press_photo.jpg`` under the data folder at its
own size, at the ``wider`` preset: min face 10, factor 0.79, thresholds 0.5/0.5/0.3), batch 1, on
every device, backend and precision; skipped, with the reason in ``skipped``, when the file is absent.

The default image is a real photo (``data_root()/dlib_faces/bald_guys.jpg``) resized to each
size, so candidate counts are realistic; without it a synthetic image is used (and recorded).
"""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.errors import MTCNNError, UsageError
import torch

__all__ = [
    "BenchmarkResult",
    "CaseResult",
    "Comparison",
    "MEMORY_MODES",
    "REGRESSION_CASE",
    "default_image",
    "parse_size",
    "parse_proc_status",
    "run_benchmark",
]

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (1920, 1080))


class BenchmarkError(UsageError):
    """The benchmark cannot run; ``str(e)`` is one line."""


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise BenchmarkError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One (device, backend, precision, size, min_face, batch size) case. Times are ms per image; ``cpu_ms``
    is the process's CPU time per image (all threads), steadier than wall time on a busy machine.
    A mixed batch (``--mixed N``) has width = height = 0 and ``label`` "mixed×N"; a named case
    (the regression photo) its own size and its name as ``label``. Memory in MB (module docstring):
    ``peak_rss_mb`` the case's own process at its peak, ``baseline_rss_mb`` after imports and model
    load, ``peak_mem_mb`` the difference; None with ``memory="off"``."""

    device: str
    width: int
    height: int
    min_face: float
    batch_size: int
    ms_median: float
    ms_p10: float
    ms_p90: float
    ms_mean: float
    times_ms: list[float]
    faces: int
    peak_mem_mb: float | None
    mem_method: str
    backend: str = "torch"
    cpu_ms_median: float | None = None
    label: str = ""
    precision: str = "float32"
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    gpu_peak_mb: float | None = None


@dataclass
class Comparison:
    """Ours against facenet-pytorch on the same image(s): speed and detection agreement.

    The two are timed interleaved (ours, theirs, ours, ...) so both see the same machine load.
    matched_iou50 / matched_iou30: reference detections matched one-to-one by ours at IoU ≥ 0.5 /
    ≥ 0.3 (greedy by our score); speedup = reference median / our median (wall time);
    cpu_speedup the same for process CPU time. A mixed batch: ours in one call, facenet-pytorch
    image by image (it cannot batch different sizes); times per image.
    """

    device: str
    width: int
    height: int
    min_face: float
    ours_ms_median: float
    reference_ms_median: float
    reference_ms_p10: float
    reference_ms_p90: float
    speedup: float
    ours_count: int
    reference_count: int
    matched_iou50: int
    matched_iou30: int
    backend: str = "torch"
    ours_cpu_ms_median: float | None = None
    reference_cpu_ms_median: float | None = None
    cpu_speedup: float | None = None
    label: str = ""
    precision: str = "float32"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _variant(case) -> str:
    """The table's backend column: the backend, with "+bf16" when its O-Net ran bfloat16."""
    return case.backend if case.precision == "float32" else f"{case.backend}+bf16"


@dataclass
class BenchmarkResult:
    settings: dict
    cases: list[CaseResult] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "cases": [asdict(c) for c in self.cases],
            "comparisons": [asdict(c) for c in self.comparisons],
            "skipped": list(self.skipped),
        }

    def format_table(self) -> str:
        s = self.settings
        lines = [
            f"image: {s['image']}; torch {s['torch']}, {s['threads']} threads; repeats {s['repeats']}, warmup {s['warmup']}; "
            f"weights {s['weights']} ({s['weights_sha256'] or 'n/a'}); factor {s['factor']}, thresholds {'/'.join(map(str, s['thresholds']))}",
            f"{'device':<8}{'backend':>12}{'size':>15}{'min_face':>9}{'batch':>6}{'median ms':>11}{'p10':>9}{'p90':>9}{'cpu ms':>8}{'faces':>7}"
            f"{'peak RSS':>10}{'above base':>11}" + (f"{'GPU MB':>8}" if any(c.gpu_peak_mb is not None for c in self.cases) else ""),
        ]
        for c in self.cases:
            cpu = f"{c.cpu_ms_median:.1f}" if c.cpu_ms_median is not None else "n/a"
            gpu = f"{c.gpu_peak_mb:>8.1f}" if c.gpu_peak_mb is not None else ("     n/a" if "GPU" in lines[1] else "")
            lines.append(
                f"{c.device:<8}{_variant(c):>12}{c.label or f'{c.width}x{c.height}':>15}{c.min_face:>9g}{c.batch_size:>6}{c.ms_median:>11.1f}"
                f"{c.ms_p10:>9.1f}{c.ms_p90:>9.1f}{cpu:>8}{c.faces:>7}{_mb(c.peak_rss_mb):>10}{_mb(c.peak_mem_mb):>11}{gpu}"
            )
        if s.get("memory", "isolated") == "isolated":
            lines.append("memory (MB): peak RSS of the case's own process (VmHWM: every allocator); above base: minus its RSS after imports and model load")
        if self.comparisons:
            lines.append("")
            ref_t = "/".join(f"{t:g}" for t in s.get("facenet_thresholds", s["thresholds"]))
            lines.append(f"against facenet-pytorch 2.6.0 (same images, min face and factor; its thresholds {ref_t}; timed interleaved; ms per image):")
            lines.append(
                f"{'device':<8}{'backend':>12}{'size':>11}{'min_face':>9}{'ours ms':>9}{'facenet ms':>11}{'speed-up':>9}"
                f"{'cpu x':>7}{'ours':>6}{'ref':>5}{'match@.5':>9}{'match@.3':>9}"
            )
            for c in self.comparisons:
                cpu = f"{c.cpu_speedup:.2f}x" if c.cpu_speedup is not None else "n/a"
                lines.append(
                    f"{c.device:<8}{_variant(c):>12}{c.label or f'{c.width}x{c.height}':>11}{c.min_face:>9g}{c.ours_ms_median:>9.1f}"
                    f"{c.reference_ms_median:>11.1f}{c.speedup:>8.2f}x{cpu:>7}{c.ours_count:>6}{c.reference_count:>5}"
                    f"{c.matched_iou50:>9}{c.matched_iou30:>9}"
                )
        for sk in self.skipped:
            lines.append(f"skipped {sk.get('device') or sk.get('case', '')}: {sk.get('reason', '')}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


MEMORY_MODES = ("isolated", "off")


def parse_proc_status(text: str) -> dict[str, int]:
    """The kB lines of a ``/proc/<pid>/status`` text: ``{"VmRSS": 51234, "VmHWM": 60000, ...}`` (kB)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+)\s+kB\s*$", text, re.M)}


def _proc_status() -> dict[str, int]:
    try:
        with open("/proc/self/status") as f:
            return parse_proc_status(f.read())
    except OSError:
        return {}


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, kB on Linux


def _reset_peak_rss() -> bool:
    """Set this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class _Measured:
    """What one case's calls gave: times (ms per image), faces found, memory (MB; module docstring)."""

    times: list[float]
    cpu: list[float]
    faces: int
    method: str
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    gpu_peak_mb: float | None = None

    @property
    def above_baseline_mb(self) -> float | None:
        if self.peak_rss_mb is None or self.baseline_rss_mb is None:
            return None
        return max(0.0, self.peak_rss_mb - self.baseline_rss_mb)


def _run_case(det, images: list, copies: int, device: torch.device, repeats: int, warmup: int) -> tuple[int, list, list]:
    """(faces found, wall ms, CPU ms per image): one untimed call for the count, then the timing."""
    faces = sum(len(d) for d in det.detect(images))
    batch = images * copies
    [(times, cpu)] = _time_interleaved([lambda: det.detect(batch)], device, repeats, warmup, [len(batch)])
    return faces, times, cpu


@dataclass
class _CaseJob:
    """Everything a child process needs for one case (picklable: the PyTorch nets, not their runners)."""

    nets: dict
    config: Any
    weights_info: dict
    backend: str
    precision: str
    device: str
    images: list
    copies: int
    repeats: int
    warmup: int
    threads: int

    def __call__(self) -> _Measured:
        """Run in the child: build the detector, note the baseline, run the case, read the peak."""
        from mtcnn.detector import MTCNN

        torch.set_num_threads(self.threads)
        device = torch.device(self.device)
        det = MTCNN(nets=self.nets, device=device, backend=self.backend, precision=self.precision)
        det.config, det.weights_info = self.config, self.weights_info
        gc.collect()
        base = _proc_status().get("VmRSS")
        reset = base is not None and _reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            gpu_base = torch.cuda.memory_allocated(device)
        faces, times, cpu = _run_case(det, self.images, self.copies, device, self.repeats, self.warmup)
        peak = _proc_status().get("VmHWM") if base is not None else None
        if peak is not None:
            method = "vmhwm, own process" + ("" if reset else " (peak includes model load)")
        else:  # no /proc: the child's own high-water mark, which includes the load
            base, peak, method = None, _maxrss_kb(), "ru_maxrss, own process (includes load)"
        out = _Measured(times, cpu, faces, method, peak / 1024, None if base is None else base / 1024)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            out.gpu_peak_mb = max(0, torch.cuda.max_memory_allocated(device) - gpu_base) / 2**20
        return out


def _call(job: _CaseJob) -> _Measured:
    return job()


def _isolated(det, images: list, copies: int, device: torch.device, repeats: int, warmup: int) -> _Measured:
    """One case in a fresh "spawn" child process (its memory is its own; module docstring)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    job = _CaseJob(dict(det.source_nets), det.config, det.weights_info, getattr(det, "backend", "torch"),
                   getattr(det, "precision", "float32"), str(device), list(images), copies, repeats, warmup,
                   torch.get_num_threads())  # fmt: skip
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_call, job).result()
        except BrokenProcessPool as e:
            raise MTCNNError(f"a benchmark case's process died (out of memory?): {e}") from e


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int, per_call: int) -> list[float]:
    return _time_interleaved([fn], device, repeats, warmup, [per_call])[0][0]


def _time_interleaved(
    fns: Sequence[Callable[[], Any]], device: torch.device, repeats: int, warmup: int, per_call: Sequence[int]
) -> list[tuple[list[float], list[float]]]:
    """Call each function in turn, ``repeats`` rounds: (wall ms, process CPU ms) per call / per_call."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in fns]
    for _ in range(repeats):
        for fn, n, (wall, cpu) in zip(fns, per_call, out):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall.append((time.perf_counter() - t0) * 1000.0 / n)
            cpu.append((time.process_time() - c0) * 1000.0 / n)
    return out


def _stats(times: Sequence[float]) -> tuple[float, float, float, float]:
    a = np.asarray(times, dtype=np.float64)
    return (float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90)), float(a.mean()))


# --------------------------------------------------------------------------------------------
# images and detectors
# --------------------------------------------------------------------------------------------


def _synthetic_image(width: int = 640, height: int = 480) -> np.ndarray:
    """Deterministic stand-in photo: smooth background, noise and a few skin-toned ellipses."""
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200, yy / height * 180, (xx + yy) / (width + height) * 160], axis=2)
    img += rng.normal(0, 12, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for k in range(6):
        cx, cy = int(width * (0.15 + 0.14 * k)), int(height * (0.35 + 0.1 * (k % 3)))
        r = max(4, int(min(width, height) * (0.05 + 0.02 * k)))
        cv2.ellipse(img, (cx, cy), (r, int(r * 1.25)), 0, 0, 360, (224, 172, 140), -1)
        cv2.circle(img, (cx - r // 3, cy - r // 4), max(1, r // 8), (40, 30, 30), -1)
        cv2.circle(img, (cx + r // 3, cy - r // 4), max(1, r // 8), (40, 30, 30), -1)
    return img


def default_image() -> tuple[np.ndarray, str]:
    """(RGB image, where it came from): dlib's bald_guys.jpg from the data folder, else synthetic."""
    from mtcnn.config import data_root
    from mtcnn.io import ImageReadError, read_image_rgb

    path = data_root() / "dlib_faces" / "bald_guys.jpg"
    try:
        return read_image_rgb(path), str(path)
    except ImageReadError:
        return _synthetic_image(), "synthetic (dlib_faces/bald_guys.jpg not found)"


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    if image.shape[1] == width and image.shape[0] == height:
        return image
    interp = cv2.INTER_AREA if width * height < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interp))


def _detector_on(base, device: torch.device, backend: str = "torch", precision: str = "float32"):
    """``base`` itself when it runs on ``device`` with ``backend`` and ``precision``, else a copy
    of its nets and settings there (built from ``base.source_nets``, the PyTorch nets it was
    made from)."""
    from mtcnn.detector import MTCNN

    if (torch.device(base.device) == device and getattr(base, "backend", "torch") == backend
            and getattr(base, "precision", "float32") == precision):  # fmt: skip
        return base
    nets = {k: copy.deepcopy(v) for k, v in base.source_nets.items()}
    other = MTCNN(nets=nets, device=device, backend=backend, precision=precision)
    other.config = base.config
    other.weights_info = base.weights_info
    return other


def _load_reference_class():
    from mtcnn.eval.facenet_reference import FacenetReference

    return FacenetReference


def _agreement(ours, ref_boxes: np.ndarray, iou: float) -> int:
    from mtcnn.eval.detection import match_detections

    res = match_detections(ours.boxes.numpy(), ours.scores.numpy(), ref_boxes[:, :4], iou_threshold=iou)
    return int(res.tp.sum())


def _check_arguments(repeats: int, warmup: int, batch_sizes: Sequence[int], mixed: int, threads: int | None,
                     memory: str = "isolated") -> None:
    """Refuse counts the benchmark cannot run with; apply ``threads`` to torch."""
    if memory not in MEMORY_MODES:
        raise BenchmarkError(f"memory must be one of {', '.join(MEMORY_MODES)}, not {memory!r}")
    if repeats < 1 or warmup < 0:
        raise BenchmarkError("repeats must be >= 1 and warmup >= 0")
    if any(b < 1 for b in batch_sizes):
        raise BenchmarkError("batch sizes must be >= 1")
    if not 0 <= mixed <= len(MIXED_SIZES):
        raise BenchmarkError(f"mixed must be between 0 and {len(MIXED_SIZES)}")
    if threads is not None:
        if threads < 1:
            raise BenchmarkError("threads must be >= 1")
        torch.set_num_threads(int(threads))


def _base_image(image: np.ndarray | str | os.PathLike | None) -> tuple[np.ndarray, str]:
    """(RGB image, where it came from) for :func:`run_benchmark`'s ``image`` argument."""
    from mtcnn.io import read_image_rgb

    if image is None:
        return default_image()
    if isinstance(image, np.ndarray):
        return image, "<array>"
    return read_image_rgb(image), str(image)


@dataclass
class _Grid:
    """The sizes x minimum face sizes x batch sizes one detector (device, backend, precision) is timed on."""

    base_image: np.ndarray
    sizes: Sequence[tuple[int, int]]
    min_faces: Sequence[float]
    batch_sizes: Sequence[int]
    mixed: int
    repeats: int
    warmup: int
    log: Callable[[str], None]
    facenet_thresholds: tuple[float, ...]
    memory: str = "isolated"
    named: Sequence[tuple[str, np.ndarray, dict]] = ()  # (label, image, detector settings): batch 1, not compared

    def time_detector(self, result: BenchmarkResult, det_dev, reference, device: torch.device, dev_name: str,
                      backend: str, precision: str) -> None:
        """Add the cases (and, beside ``reference``, the comparisons) of ``det_dev`` to ``result``."""
        for label, images in _inputs(self.base_image, self.sizes, self.mixed):
            for m in self.min_faces:
                det = det_dev.with_settings(min_face_size=float(m))
                run = _Run(det, reference, images, label, device, dev_name, backend, float(m), self.repeats, self.warmup,
                           self.log, precision, self.facenet_thresholds, self.memory)
                result.cases.extend(run.cases([len(images)] if len(images) > 1 else self.batch_sizes))
                if reference is not None:
                    result.comparisons.append(run.compare())
        for label, image, changes in self.named:
            det = det_dev.with_settings(**changes)
            run = _Run(det, None, [image], label, device, dev_name, backend, float(det.config.min_face_size), self.repeats,
                       self.warmup, self.log, precision, memory=self.memory, named=True)
            result.cases.extend(run.cases([1]))


# The photo that once flooded P-Net (docs/performance.md, "When P-Net floods"): (label, path under
# the data folder, detector preset) for ``run_benchmark(regression=True)`` / ``--regression``.
REGRESSION_CASE = ("led_wall@wider", "regressions/led_wall_press_photo.jpg", "wider")


def _named_cases(regression: bool, result: BenchmarkResult, log: Callable[[str], None]) -> list[tuple[str, np.ndarray, dict]]:
    """The named cases asked for, each (label, RGB image, detector settings); an absent photo is
    listed in ``result.skipped`` (and logged) instead."""
    from mtcnn.config import data_root
    from mtcnn.config.detector import DETECTOR_PRESETS
    from mtcnn.io import read_image_rgb

    if not regression:
        return []
    label, rel, preset = REGRESSION_CASE
    path = data_root() / rel
    if not path.is_file():
        reason = f"regression photo {path} not found (set MTCNN_DATA to the data folder that has {rel})"
        result.skipped.append({"case": label, "reason": reason})
        log(f"skipping {label}: {reason}")
        return []
    image = read_image_rgb(path)
    result.settings["regression"] = {"label": label, "image": str(path), "size": [int(image.shape[1]), int(image.shape[0])],
                                      "preset": preset, "settings": dict(DETECTOR_PRESETS[preset])}  # fmt: skip
    return [(label, image, dict(DETECTOR_PRESETS[preset]))]


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


def run_benchmark(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    min_faces: Sequence[float] = (20.0,),
    batch_sizes: Sequence[int] = (1,),
    devices: Sequence[str] = ("cpu",),
    *,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    weights: str | os.PathLike | None = None,
    detector: Any = None,
    image: np.ndarray | str | os.PathLike | None = None,
    compare_facenet: str | os.PathLike | None = None,
    backends: Sequence[str] = ("torch",),
    mixed: int = 0,
    log: Callable[[str], None] | None = None,
    precisions: Sequence[str] = ("auto",),
    facenet_thresholds: Sequence[float] | None = None,
    memory: str = "isolated",
    regression: bool = False,
) -> BenchmarkResult:
    """Time the detector on every (device, backend, precision, size, min_face, batch size)
    combination; a precision a backend or device does not run (bfloat16 off the CPU torch
    backend) is skipped and listed in ``skipped``; "auto" is the detector's own precision (on
    another device or backend: what ``MTCNN()`` resolves there).

    ``detector``: a ready :class:`~mtcnn.detector.MTCNN` (its factor and thresholds are used; its
    nets are copied to other devices), else one is loaded from ``weights``. ``image``: an RGB
    array or a file, default :func:`default_image`. A CUDA device without CUDA is skipped and
    listed in ``skipped``. ``compare_facenet``: the facenet-pytorch 2.6.0 wheel; its MTCNN is
    timed on the same images (batch 1) with the same min face and factor, interleaved with ours;
    its thresholds are ``facenet_thresholds`` if given, else ours when our detector runs the
    original MTCNN weights (the same nets: same settings), else facenet-pytorch's own defaults
    (0.6, 0.7, 0.7: the thresholds its weights were made for; ours were calibrated separately).
    ``mixed``: also one batch of that many differently sized copies of the image
    (:data:`MIXED_SIZES`, up to 8) in a single detect call. ``memory``: "isolated" (each case in
    its own process, peak RSS measured) or "off"; ``regression``: add :data:`REGRESSION_CASE`.
    """
    from mtcnn.backends import resolve_precision

    log = log or (lambda _msg: None)
    _check_arguments(repeats, warmup, batch_sizes, mixed, threads, memory)
    base_image, image_source = _base_image(image)
    if detector is None:
        from mtcnn.detector import MTCNN

        detector = MTCNN(weights=weights, device="cpu")
    settings = _settings(detector, base_image, image_source, sizes, min_faces, batch_sizes, devices, repeats, warmup,
                         compare_facenet, backends, mixed, precisions)
    if compare_facenet:
        settings["facenet_thresholds"] = reference_thresholds(detector, facenet_thresholds)
    settings["memory"] = memory
    result = BenchmarkResult(settings=settings)
    reference_cls = _load_reference_class() if compare_facenet else None
    if compare_facenet and not Path(compare_facenet).is_file():
        raise BenchmarkError(f"{compare_facenet}: facenet-pytorch wheel not found")
    grid = _Grid(base_image, sizes, min_faces, batch_sizes, mixed, repeats, warmup, log,
                 tuple(settings.get("facenet_thresholds", ())), memory, _named_cases(regression, result, log))
    for dev_name in devices:
        device = torch.device(dev_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            result.skipped.append({"device": dev_name, "reason": "CUDA is not available"})
            log(f"skipping {dev_name}: CUDA is not available")
            continue
        if device.type == "cuda":
            settings.setdefault("cuda_devices", {})[dev_name] = torch.cuda.get_device_name(device)
        reference = reference_cls(compare_facenet, dev_name) if reference_cls else None
        for backend in backends:
            if backend != "torch" and device.type != "cpu":
                result.skipped.append({"device": dev_name, "reason": f"backend {backend} runs on the CPU only"})
                continue
            done: set[str] = set()
            for precision in precisions:
                if precision == "auto":
                    # What the detector runs here (its own precision on its own device and backend).
                    same = torch.device(detector.device) == device and getattr(detector, "backend", "torch") == backend
                    precision = getattr(detector, "precision", "float32") if same else resolve_precision("auto", device, backend)
                if precision in done:
                    continue
                done.add(precision)
                if precision != "float32" and (backend != "torch" or device.type != "cpu"):
                    result.skipped.append({"device": dev_name, "reason": f"{precision} runs on the CPU torch backend only, not {backend}"})
                    continue
                det_dev = _detector_on(detector, device, backend, precision)
                grid.time_detector(result, det_dev, reference, device, dev_name, backend, precision)
    return result


FACENET_DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)


def reference_thresholds(detector, given: Sequence[float] | None = None) -> list[float]:
    """The stage thresholds facenet-pytorch runs at beside ``detector`` (see :func:`run_benchmark`)."""
    if given is not None:
        if len(given) != 3 or not all(0.0 <= float(t) <= 1.0 for t in given):
            raise BenchmarkError(f"facenet thresholds must be three numbers in [0, 1], not {list(given)}")
        return [float(t) for t in given]
    from mtcnn.weights import WeightsError, original_weights

    try:
        original = Path(original_weights()).resolve()
    except WeightsError:
        original = None
    same_nets = original is not None and Path(str(detector.weights_info.get("path", ""))).resolve() == original
    return [float(t) for t in (detector.config.thresholds if same_nets else FACENET_DEFAULT_THRESHOLDS)]


def _settings(detector, base_image, image_source, sizes, min_faces, batch_sizes, devices, repeats, warmup,
              compare_facenet, backends=("torch",), mixed=0, precisions=("auto",)) -> dict[str, Any]:
    """Everything a benchmark result must say about how it was measured."""
    from mtcnn.config import to_dict

    cfg = detector.config
    return {
        "image": image_source,
        "image_size": [int(base_image.shape[1]), int(base_image.shape[0])],
        "sizes": [f"{w}x{h}" for w, h in sizes],
        "min_faces": [float(m) for m in min_faces],
        "batch_sizes": [int(b) for b in batch_sizes],
        "devices": list(devices),
        "backends": list(backends),
        "precisions": list(precisions),
        "mixed_sizes": [f"{w}x{h}" for w, h in MIXED_SIZES[:mixed]],
        "repeats": int(repeats),
        "warmup": int(warmup),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "weights": detector.weights_info.get("path"),
        "weights_sha256": detector.weights_info.get("sha256"),
        "factor": float(cfg.factor),
        "thresholds": [float(t) for t in cfg.thresholds],
        "detector": to_dict(cfg),
        "compare_facenet": str(compare_facenet) if compare_facenet else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }



# A mixed batch: sizes of phones, webcams and screens, portrait and landscape.
MIXED_SIZES = ((640, 480), (1280, 720), (480, 640), (1920, 1080), (800, 600), (320, 240), (1024, 768), (720, 1280))


def _inputs(base_image: np.ndarray, sizes, mixed: int) -> list[tuple[str, list[np.ndarray]]]:
    """(label, images) per case: the photo at each size, then the mixed batch if asked for."""
    inputs = [(f"{w}x{h}", [_resize(base_image, int(w), int(h))]) for w, h in sizes]
    if mixed:
        inputs.append((f"mixed×{mixed}", [_resize(base_image, w, h) for w, h in MIXED_SIZES[:mixed]]))
    return inputs


@dataclass
class _Run:
    """Timing one detector (and optionally facenet-pytorch) on one image or one mixed batch."""

    det: Any
    reference: Any
    images: list
    label: str
    device: torch.device
    dev_name: str
    backend: str
    min_face: float
    repeats: int
    warmup: int
    log: Callable[[str], None]
    precision: str = "float32"
    reference_thresholds: tuple[float, ...] = ()
    memory: str = "isolated"
    named: bool = False

    @property
    def case_label(self) -> str:
        """The table's size column when not WIDTHxHEIGHT: a mixed batch or a named case."""
        return self.label if self.named or len(self.images) > 1 else ""

    def _size(self) -> tuple[int, int]:
        h, w = self.images[0].shape[:2]
        return (int(w), int(h)) if len(self.images) == 1 else (0, 0)

    def cases(self, batch_sizes: Sequence[int]) -> list[CaseResult]:
        out = []
        for bs in batch_sizes:
            copies = int(bs) if len(self.images) == 1 else 1
            if self.memory == "isolated":
                m = _isolated(self.det, self.images, copies, self.device, self.repeats, self.warmup)
            else:
                faces, times, cpu = _run_case(self.det, self.images, copies, self.device, self.repeats, self.warmup)
                m = _Measured(times, cpu, faces, "off (in-process; no memory figures)")
            med, p10, p90, mean = _stats(m.times)
            width, height = self._size()
            out.append(CaseResult(
                device=str(self.dev_name), width=width, height=height, min_face=self.min_face, batch_size=copies * len(self.images),
                ms_median=med, ms_p10=p10, ms_p90=p90, ms_mean=mean, times_ms=[float(t) for t in m.times],
                faces=m.faces, peak_mem_mb=m.above_baseline_mb, mem_method=m.method, backend=self.backend,
                cpu_ms_median=float(np.median(m.cpu)), label=self.case_label, precision=self.precision,
                peak_rss_mb=m.peak_rss_mb, baseline_rss_mb=m.baseline_rss_mb, gpu_peak_mb=m.gpu_peak_mb,
            ))  # fmt: skip
            mem = f"; peak RSS {m.peak_rss_mb:.1f} MB, {m.above_baseline_mb:.1f} above base" if m.above_baseline_mb is not None else ""
            self.log(f"{self.dev_name} {self.backend} {self.precision} {self.label} min_face {self.min_face:g} batch {copies * len(self.images)}: "
                     f"{med:.1f} ms/image (p10 {p10:.1f}, p90 {p90:.1f}){mem}")  # fmt: skip
        return out

    def compare(self) -> Comparison:
        ref, det, images = self.reference, self.det, self.images
        ref.min_face_size = self.min_face
        ref.factor = float(det.config.factor)
        ref.thresholds = list(self.reference_thresholds)
        n = len(images)
        (ours_t, ours_cpu), (ref_t, ref_cpu) = _time_interleaved(
            [lambda: det.detect(images), lambda: [ref.detect(im) for im in images]], self.device, self.repeats, self.warmup, [n, n]
        )  # fmt: skip
        ours = det.detect(images)
        ref_boxes = [ref.detect(im)[0] for im in images]
        o_med, r_med = float(np.median(ours_t)), float(np.median(ref_t))
        o_cpu, r_cpu = float(np.median(ours_cpu)), float(np.median(ref_cpu))
        _, r_p10, r_p90, _ = _stats(ref_t)
        width, height = self._size()
        cmp = Comparison(
            device=str(self.dev_name), width=width, height=height, min_face=self.min_face,
            ours_ms_median=o_med, reference_ms_median=r_med, reference_ms_p10=r_p10, reference_ms_p90=r_p90,
            speedup=r_med / o_med if o_med > 0 else float("nan"),
            ours_count=sum(map(len, ours)), reference_count=sum(int(b.shape[0]) for b in ref_boxes),
            matched_iou50=sum(_agreement(o, b, 0.5) for o, b in zip(ours, ref_boxes)),
            matched_iou30=sum(_agreement(o, b, 0.3) for o, b in zip(ours, ref_boxes)),
            backend=self.backend, ours_cpu_ms_median=o_cpu, reference_cpu_ms_median=r_cpu,
            cpu_speedup=r_cpu / o_cpu if o_cpu > 0 else None, label="" if n == 1 else self.label,
            precision=self.precision,
        )  # fmt: skip
        self.log(
            f"{self.dev_name} {self.backend} {self.precision} {self.label} min_face {self.min_face:g}: facenet {r_med:.1f} ms, ours {o_med:.1f} ms "
            f"(x{cmp.speedup:.2f}); {cmp.matched_iou50}/{cmp.reference_count} reference faces matched at IoU 0.5"
        )
        return cmp
