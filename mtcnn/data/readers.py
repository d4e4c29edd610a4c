"""Readers over sample files for training: several files as one, all rows in RAM, and the
one-line-error opener every training task uses (moved here from ``mtcnn/train.py``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtcnn.config.paths import resolve_path
from mtcnn.data.h5 import KINDS, TRAIN_FIELDS, SampleFileError, SampleReader
from mtcnn.data.shards import sample_files
from mtcnn.errors import DataError


class MultiFileReader(SampleReader):
    """Several sample files seen as one: each kind's rows are those files' rows, concatenated.

    ``parts`` maps each kind to the readers it comes from (in order). Quacks like
    :class:`SampleReader` for :class:`MixedBatchLoader` (``path``, ``size``, ``counts``,
    ``get``, ``load_meta``, ``close``) and pickles into DataLoader workers the same way.
    """

    def __init__(self, parts: Mapping[str, Sequence[SampleReader]]):
        readers = {id(r): r for rs in parts.values() for r in rs}
        self._readers = list(readers.values())
        sizes = {r.size for r in self._readers}
        if len(sizes) != 1:
            raise SampleFileError("sample files hold different crop sizes: " + ", ".join(
                f"{r.path} ({r.size}px)" for r in self._readers))
        self.size = sizes.pop()
        self.path = " + ".join(str(r.path) for r in self._readers)
        self.attrs = dict(self._readers[0].attrs)
        self._parts = {k: list(parts.get(k, [])) for k in KINDS}
        self._lengths = {k: [r.len(k) for r in self._parts[k]] for k in KINDS}
        self._counts = {k: int(sum(v)) for k, v in self._lengths.items()}
        self._f = None
        self._pid = None
        self._meta = None

    def load_meta(self) -> None:
        for r in self._readers:
            r.load_meta()

    def close(self) -> None:
        for r in getattr(self, "_readers", []):
            r.close()

    def sources(self) -> list[str]:
        return [s for r in self._readers for s in r.sources()]

    def row_sources(self, kind: str) -> np.ndarray:
        # Each file's source column indexes its own table: map file by file.
        self._check_kind(kind)
        parts = [r.row_sources(kind) for r in self._parts[kind]]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=object)

    def get(self, kind: str, indices, fields: Sequence[str] = TRAIN_FIELDS) -> dict[str, np.ndarray]:
        self._check_kind(kind)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._counts[kind]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: {kind} index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        readers = self._parts[kind]
        if not readers:
            raise IndexError(f"{self.path}: no file provides {kind} samples")
        ends = np.cumsum(self._lengths[kind])
        which = np.searchsorted(ends, idx, side="right")
        out: dict[str, np.ndarray] | None = None
        for j, reader in enumerate(readers):
            sel = np.flatnonzero(which == j)
            if sel.size == 0 and not (out is None and j == len(readers) - 1):
                continue
            start = int(ends[j] - self._lengths[kind][j])
            part = reader.get(kind, idx[sel] - start, fields)
            if out is None:
                out = {name: np.empty((idx.size,) + a.shape[1:], a.dtype) for name, a in part.items()}
            for name, a in part.items():
                out[name][sel] = a
        assert out is not None
        return out


class InMemoryReader(SampleReader):
    """Every row of another reader held in RAM (numpy arrays), loaded on the first
    :meth:`load_meta` (which :class:`MixedBatchLoader` calls before forking its workers, so
    they share the arrays copy-on-write).

    Minibatches pick rows at random and HDF5 reads them one by one (tens of microseconds
    each): for 12 px crops that costs more than the P-Net step itself, while the whole P-Net
    training set takes only 432 bytes per sample. Batches are identical either way.
    """

    def __init__(self, reader: SampleReader):
        self._inner = reader
        self.path = reader.path
        self.size = reader.size
        self.attrs = dict(getattr(reader, "attrs", {}))
        self._counts = reader.counts()
        self._data: dict[str, dict[str, np.ndarray]] | None = None
        self._f = None
        self._pid = None
        self._meta = None

    @staticmethod
    def nbytes(reader: SampleReader) -> int:
        return sum(reader.counts().values()) * (3 * reader.size * reader.size + 1 + 14 * 4)

    def load_meta(self) -> None:
        if self._data is None:
            self._data = {k: self._inner.get(k, np.arange(n), TRAIN_FIELDS) for k, n in self._counts.items()}
            self._inner.close()

    def close(self) -> None:
        if hasattr(self, "_inner"):
            self._inner.close()

    def __getstate__(self):
        return self.__dict__.copy()  # keep the arrays (spawned workers get a copy)

    def sources(self) -> list[str]:
        return self._inner.sources()

    def row_sources(self, kind: str) -> np.ndarray:
        return self._inner.row_sources(kind)

    def get(self, kind: str, indices, fields: Sequence[str] = TRAIN_FIELDS) -> dict[str, np.ndarray]:
        if any(name not in TRAIN_FIELDS for name in fields):
            return self._inner.get(kind, indices, fields)
        self._check_kind(kind)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._counts[kind]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: {kind} index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        self.load_meta()
        return {name: self._data[kind][name][idx] for name in fields}


def _file_list(value: str | Sequence[str] | None) -> list[Path]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [resolve_path(v) for v in items]


def open_sample_file(path: str | os.PathLike, expected_size: int | None = None) -> SampleReader:
    """A reader over one sample file, or over the shards a split generator wrote in its place
    (:func:`mtcnn.data.shards.sample_files`: read as one dataset, each kind's rows in rank order)."""
    files = sample_files(path)
    readers = [SampleReader(f, expected_size=expected_size) for f in files]
    if len(readers) == 1:
        return readers[0]
    return MultiFileReader({k: readers for k in KINDS})


def open_samples(files: str | Sequence[str] | None, by_kind: Any = None, expected_size: int | None = None,
                 what: str = "training") -> SampleReader:
    """One reader over ``files`` (every kind) with per-kind replacements ``by_kind`` (a
    :class:`mtcnn.config.train.KindFiles` or mapping kind -> files). A file that a split
    generator wrote as shards (``pnet_train.h5`` -> ``pnet_train.shards.json``) counts as its
    shards, in rank order. Fails with a one-line :class:`mtcnn.errors.DataError` naming a
    missing or wrong file."""
    main = _file_list(files)
    per_kind: dict[str, list[Path]] = {}
    for kind in KINDS:
        override = getattr(by_kind, kind, None) if not isinstance(by_kind, Mapping) else by_kind.get(kind)
        per_kind[kind] = _file_list(override) if override is not None else main
    expanded: dict[Path, list[Path]] = {}
    cache: dict[Path, SampleReader] = {}
    for kind, paths in per_kind.items():
        for given in paths:
            if given in expanded:
                continue
            try:
                expanded[given] = sample_files(given)
                for p in expanded[given]:
                    if p not in cache:
                        cache[p] = SampleReader(p, expected_size=expected_size)
            except FileNotFoundError as e:
                raise DataError(f"{what} data: {e} (set data.train / data.val, or generate it first)") from None
            except SampleFileError as e:
                raise DataError(f"{what} data: {e}") from None
    if not cache:
        raise DataError(f"no {what} sample files given")
    if len(cache) == 1:
        return next(iter(cache.values()))
    return MultiFileReader({k: [cache[p] for given in paths for p in expanded[given]] for k, paths in per_kind.items()})


def normalise_images(images: np.ndarray | torch.Tensor, mean: float = 127.5, scale: float = 0.0078125) -> torch.Tensor:
    """uint8 [B,S,S,C] -> float32 [B,C,S,S] = (pixel - mean) * scale (no augmentation); the
    defaults are the MTCNN nets' (a net's own values: NetSpec.mean / NetSpec.scale)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).to(torch.float32)
    return x.sub_(mean).mul_(scale)
