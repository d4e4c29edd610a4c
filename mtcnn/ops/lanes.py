"""Two lanes: independent pieces of one detect call on two Python threads, one intra-op thread each.

On a 2-core CPU the second core bought the detector only 1.3-1.5× as intra-op parallelism: its
operations are small (pyramid levels, chunks of 24×24 and 48×48 crops), so every one pays
OpenMP's fork and barrier, and OpenCV's crop threads compete with OpenMP's spinning ones
(docs/performance.md). Here whole pieces of work run side by side instead (P-Net canvases, R/O-Net
chunks with their crops), each lane running its operations on one thread: PyTorch's operators and
OpenCV release the GIL, so the two lanes really run at once.

The lanes run where PyTorch runs 2 intra-op threads on a CPU (:func:`lanes_available`), the
setting measured; OpenCV runs one thread while they do (a process-wide setting: another
thread's OpenCV calls during those moments run on one thread too). Results do not depend on the
lanes: every piece is the same operations on the same tensors as on the sequential path, the
results are put back in the pieces' order, and the crop nets' outputs do not depend on the
intra-op thread count for the chunk sizes the lanes run (:func:`lane_safe_batch`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import cv2
import torch

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# One detect call uses the lanes at a time: a second caller's pieces run in its own thread,
# sequentially (their results are the same either way).
_busy = threading.Lock()


def _after_fork_in_child() -> None:
    # A forked child has no worker thread (only the parent's executor object): start afresh.
    global _pool, _pool_lock, _busy
    _pool, _pool_lock, _busy = None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _init_lane() -> None:
    # PyTorch sets a new thread's OpenMP thread count from the process-wide setting on first use;
    # trigger that now, then keep this thread at one.
    torch.get_num_threads()
    torch.set_num_threads(1)


def _second_lane() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="mtcnn-lane", initializer=_init_lane)
        return _pool


def lanes_available(device: torch.device) -> bool:
    """Whether pieces of work on ``device`` run in two lanes: on a CPU at 2 intra-op threads (what
    was measured and is tested bit-identical; with more threads the sequential path runs)."""
    return device.type == "cpu" and torch.get_num_threads() == 2


def lane_safe_batch(n: int) -> bool:
    """Whether a crop-net chunk of ``n`` crops gives the same bits on one thread as on several.

    Measured for R- and O-Net (float32 and bfloat16) on this project's AVX-512 CPU: equal for
    every n except 5-7 and 9-11, where oneDNN/MKL pick a different kernel for 1 and 2 threads
    (tests/ops/test_lanes.py checks it for the sizes the detector runs)."""
    return not (5 <= n <= 11 and n != 8)


@contextmanager
def _single_threaded():
    """The calling thread at one intra-op thread and OpenCV at one thread, restored afterwards."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(threads)


def split_by_cost(costs: Sequence[float]) -> tuple[list[int], list[int]]:
    """Indices of the pieces for the first and the second lane, each in ascending order: a
    contiguous prefix for the first lane, with the cut where the two lanes' costs are closest."""
    total = float(sum(costs))
    best, best_gap, running = 0, float("inf"), 0.0
    for cut in range(len(costs) + 1):
        gap = abs(total - 2 * running)
        if gap < best_gap:
            best, best_gap = cut, gap
        if cut < len(costs):
            running += costs[cut]
    return list(range(best)), list(range(best, len(costs)))


def run_in_lanes(pieces: Sequence[Callable[[], T]], costs: Sequence[float] | None = None) -> list[T]:
    """``[piece() for piece in pieces]``, the pieces split over two lanes by ``costs`` (default
    equal): the calling thread runs the first share, a worker thread the second, each at one
    intra-op thread; results in the pieces' order. Fewer than two pieces, or the lanes busy with
    another call: run here, in order."""
    pieces = list(pieces)
    if len(pieces) < 2 or not _busy.acquire(blocking=False):
        return [piece() for piece in pieces]
    try:
        first, second = split_by_cost(costs if costs is not None else [1.0] * len(pieces))
        if not first or not second:
            return [piece() for piece in pieces]
        out: list = [None] * len(pieces)
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def second_lane() -> list:
            # Grad and inference mode are per thread: the worker takes the caller's.
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return [pieces[i]() for i in second]

        with _single_threaded():
            future = _second_lane().submit(second_lane)
            try:
                for i in first:
                    out[i] = pieces[i]()
            finally:
                done = future.result()
        for i, value in zip(second, done):
            out[i] = value
        return out
    finally:
        _busy.release()
