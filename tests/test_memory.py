"""mtcnn.memory.bound_heap: glibc's mmap threshold fixed, so a freed large buffer goes back to the
system at once instead of staying in a fragmenting heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from mtcnn.memory import HEAP_MMAP_THRESHOLD_MB, bound_heap


def _is_glibc() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    return True


def test_fast_and_unknown_settings():
    assert bound_heap(environ={"MTCNN_HEAP": "fast"}) is None
    with pytest.raises(ValueError, match="MTCNN_HEAP='tiny'"):
        bound_heap(environ={"MTCNN_HEAP": "tiny"})


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_freed_large_buffer_is_returned_with_the_bound_and_kept_without():
    # In a fresh process: a freed 6 MB block raises glibc's dynamic threshold, so the next 5 MB
    # block comes from the heap and, freed, stays resident; with the bound it is unmapped.
    code = """
import ctypes, sys
from mtcnn.memory import bound_heap
if sys.argv[1] == 'bounded':
    assert bound_heap(environ={}) == %d << 20
libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
libc.free(libc.malloc(6 << 20))
before = rss()
p = libc.malloc(5 << 20)
ctypes.memset(p, 1, 5 << 20)
libc.free(p)
print(rss() - before)
""" % HEAP_MMAP_THRESHOLD_MB
    kept = {v: int(subprocess.run([sys.executable, "-c", code, v], capture_output=True, text=True, check=True).stdout)
            for v in ("bounded", "default")}
    assert kept["bounded"] < 1 << 20, kept
    assert kept["default"] > 4 << 20, kept


def test_bounded_heap_context_sets_and_leaves_the_ceiling(monkeypatch):
    calls = []
    monkeypatch.setattr("mtcnn.memory.bound_heap", lambda mb=4, environ=None: calls.append(mb) or mb << 20)
    from mtcnn.memory import GLIBC_DYNAMIC_MMAP_MAX_MB, bounded_heap

    with bounded_heap():
        assert calls == [HEAP_MMAP_THRESHOLD_MB]
    assert calls == [HEAP_MMAP_THRESHOLD_MB, GLIBC_DYNAMIC_MMAP_MAX_MB]
    monkeypatch.setattr("mtcnn.memory.bound_heap", lambda mb=4, environ=None: calls.append(mb) and None)
    calls.clear()
    with bounded_heap():
        pass
    assert calls == [HEAP_MMAP_THRESHOLD_MB]  # nothing set (MTCNN_HEAP=fast): nothing to set back
