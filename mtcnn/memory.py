"""Keeping a long run's resident memory flat: glibc's heap over thousands of photos.

Detection allocates large temporary buffers whose sizes change with every photo (pyramid
levels, P-Net maps, crop batches: 1-50 MB each on a 1024 px photo at min face 10). glibc serves
a freed block larger than its mmap threshold back to the system, but raises that threshold to
the size of every such block it frees (up to 32 MB), so later buffers of a few MB come from the
heap, and blocks of ever-changing sizes fragment it: resident memory then grows with the number
of photos, not with the largest photo (an evaluation over 1,000 WIDER FACE photos at min face 10
rose from 1.0 to 2.4 GB and peaked at 2.8 GB; docs/performance.md). A fixed threshold stops the
raising: every buffer above it is mapped and returned whole when freed. The price is the page
faults of mapping them afresh (measured: more CPU time for the same photos), so only the
commands that run over many photos (evaluation, comparison, detection over folders) and
hard-example mining set it, and ``MTCNN_HEAP=fast`` turns it off. Other C libraries are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
HEAP_MMAP_THRESHOLD_MB = 4


def bound_heap(threshold_mb: int = HEAP_MMAP_THRESHOLD_MB, environ: dict | None = None) -> int | None:
    """Fix glibc's mmap threshold at ``threshold_mb`` so that resident memory stays flat over
    many photos; returns the threshold in bytes, or ``None`` when nothing was set (``MTCNN_HEAP=fast``,
    or not glibc). Call it early: memory fragmented before the call stays fragmented."""
    env = os.environ if environ is None else environ
    setting = env.get("MTCNN_HEAP", "bounded").strip().lower()
    if setting == "fast":
        return None
    if setting != "bounded":
        raise ValueError(f"MTCNN_HEAP={setting!r}: use 'bounded' (the default) or 'fast'")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
        # Only glibc names its version this way; musl and others have no such heap to tune.
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    value = int(threshold_mb) << 20
    return value if mallopt(M_MMAP_THRESHOLD, value) == 1 else None


# glibc's ceiling for the dynamic threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): where a
# long run's heap ends up anyway, so setting it back after a bounded stretch changes nothing else.
GLIBC_DYNAMIC_MMAP_MAX_MB = 32


@contextlib.contextmanager
def bounded_heap(threshold_mb: int = HEAP_MMAP_THRESHOLD_MB):
    """:func:`bound_heap` for the stretch of a run that goes over many photos (mining inside a
    pipeline that also trains: a training step's buffers are the same size every step and gain
    nothing from it, but would pay the page faults); afterwards the threshold sits at glibc's own
    ceiling."""
    if bound_heap(threshold_mb) is None:
        yield
        return
    try:
        yield
    finally:
        bound_heap(GLIBC_DYNAMIC_MMAP_MAX_MB)
