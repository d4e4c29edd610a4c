"""Crash-safe storage of work in progress: append-only column files and one commit record.

Why not write the partial HDF5 file directly: HDF5 updates its file in place. Rewriting a
compressed chunk that already holds committed rows moves the chunk and frees its old space, and
the library reuses freed space at once (for another dataset's chunk, or for metadata) while the
index on disk, from the last flush, still points there. A process killed before the next flush
leaves a file whose committed rows read as other data (``pos/bbox`` holding the crop boxes of
``pos/box``, or zeros where the index lost a chunk) or do not decompress at all ("filter
returned failure during read"). Replaying the old writer's write log up to 300 random crash
points gave 210 unreadable partial files and 11 that resumed with wrong committed rows.

Here nothing that a commit covers is ever written again: every column is a file that only
grows, and a commit is one small JSON record replaced atomically (``os.replace``) after the
appended bytes were handed to the OS. A kill at any moment leaves the previous record in force
and at most some uncommitted bytes at the end of a column, which a resume cuts off. The record
holds a CRC-32 of every column's committed bytes, so a resume verifies what it keeps (a column
damaged some other way, e.g. by a power loss before the OS wrote it out, is detected, never used).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from mtcnn.atomic import atomic_write_text

_FORMAT = "mtcnn-journal"
_VERSION = 1
_COMMIT = "commit.json"
_HEADER = "header.json"
_LOCK = "lock"


class JournalLocked(OSError):
    """Another process holds the journal."""


class JournalDamaged(ValueError):
    """The journal's committed state cannot be trusted; ``str(e)`` says what is wrong."""


class Journal:
    """Append-only byte columns in ``folder`` with atomic commits.

    ``Journal(folder, columns, header, resume)``: ``columns`` names the column files; ``header``
    (JSON-able) is stored once when the journal starts and returned by :attr:`stored_header` on
    resume. ``resume=True`` continues an existing journal (verifying every committed byte; raises
    :class:`JournalDamaged` if anything is wrong), ``resume=False`` starts a new one.
    """

    def __init__(self, folder: str | os.PathLike, columns: list[str], header: Mapping[str, Any], resume: bool):
        self.folder = Path(folder)
        self.columns = list(columns)
        self.committed: dict[str, int] = {c: 0 for c in self.columns}
        self.crc: dict[str, int] = {c: 0 for c in self.columns}
        self._pending = dict(self.committed)
        self._pending_crc = dict(self.crc)
        self._files: dict[str, BinaryIO] = {}
        self._lock_fd: int | None = None
        self.stored_header: dict[str, Any] = dict(header)
        if resume and (self.folder / _HEADER).exists():
            self._lock()
            try:
                self._load()
            except BaseException:
                self.close()
                raise
        else:
            self._start(header)

    # ---------------------------------------------------------------- setup
    def _lock(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalLocked(f"{self.folder} is locked by another process") from None
        self._lock_fd = fd

    def _start(self, header: Mapping[str, Any]) -> None:
        self._lock()
        for entry in self.folder.iterdir():
            if entry.name != _LOCK:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        atomic_write_text(self.folder / _HEADER, json.dumps({"format": _FORMAT, "version": _VERSION, **header}))
        self._write_record()
        self._open_columns()

    def _load(self) -> None:
        try:
            header = json.loads((self.folder / _HEADER).read_text())
            record = json.loads((self.folder / _COMMIT).read_text())
            committed = {c: int(record["bytes"][c]) for c in self.columns}
            crc = {c: int(record["crc32"][c]) for c in self.columns}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise JournalDamaged(f"unreadable commit record ({' '.join(str(e).split())})") from None
        if header.get("format") != _FORMAT or header.get("version") != _VERSION:
            raise JournalDamaged(f"not a version-{_VERSION} journal")
        for c in self.columns:
            path = self.folder / c
            size = path.stat().st_size if path.exists() else -1
            if size < committed[c]:
                raise JournalDamaged(f"column {c} holds {max(size, 0)} bytes, fewer than the {committed[c]} committed")
            if _file_crc(path, committed[c]) != crc[c]:
                raise JournalDamaged(f"column {c} does not match its checksum")
            with open(path, "r+b") as f:
                f.truncate(committed[c])  # drop what was written after the last commit
        self.stored_header = {k: v for k, v in header.items() if k not in ("format", "version")}
        self.committed, self.crc = committed, crc
        self._pending, self._pending_crc = dict(committed), dict(crc)
        self._open_columns()

    def _open_columns(self) -> None:
        self._files = {c: open(self.folder / c, "ab") for c in self.columns}

    # ---------------------------------------------------------------- use
    def read(self, column: str, start: int = 0, size: int | None = None) -> bytes:
        """Committed bytes ``[start, start + size)`` of ``column`` (to the committed end by default)."""
        end = self.committed[column] if size is None else min(start + size, self.committed[column])
        with open(self.folder / column, "rb") as f:
            f.seek(start)
            return f.read(max(end - start, 0))

    def append(self, column: str, data: bytes) -> None:
        self._files[column].write(data)
        self._pending[column] += len(data)
        self._pending_crc[column] = zlib.crc32(data, self._pending_crc[column])

    def pending(self, column: str) -> int:
        """Bytes of ``column`` including what was appended since the last commit."""
        return self._pending[column]

    def commit(self) -> None:
        """Everything appended so far survives a kill from the moment this returns."""
        for f in self._files.values():
            f.flush()  # the bytes reach the OS before the record that covers them
        self._write_record(self._pending, self._pending_crc)
        self.committed, self.crc = dict(self._pending), dict(self._pending_crc)

    def _write_record(self, committed: dict[str, int] | None = None, crc: dict[str, int] | None = None) -> None:
        record = {"bytes": committed or self.committed, "crc32": crc or self.crc}
        atomic_write_text(self.folder / _COMMIT, json.dumps(record))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _file_crc(path: Path, size: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        while size > 0:
            block = f.read(min(size, 1 << 24))
            if not block:
                break
            crc = zlib.crc32(block, crc)
            size -= len(block)
    return crc


def describe_difference(key: str, stored: Any, now: Any) -> str:
    """``attribute 'config' differs: sampling.pos_iou is 0.65 in the partial file, 0.7 now`` (in full).

    YAML mappings (the resolved config) are compared key by key so the differing setting is named.
    """
    if stored is None:
        return f"attribute {key!r} is missing from the partial file (now {now!r})"
    old, new = _as_mapping(stored), _as_mapping(now)
    if old is not None and new is not None:
        diffs = _mapping_diffs(old, new, "")
        if diffs:
            return f"attribute {key!r} differs: " + "; ".join(
                f"{path} is {a!r} in the partial file, {b!r} now" for path, a, b in diffs)
    return f"attribute {key!r} differs: {stored!r} in the partial file, {now!r} now"


def _as_mapping(value: Any) -> dict | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and ":" in value:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _mapping_diffs(a: dict, b: dict, prefix: str) -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        path = f"{prefix}{key}"
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict):
            out += _mapping_diffs(x, y, path + ".")
        elif x != y:
            out.append((path, x, y))
    return out
