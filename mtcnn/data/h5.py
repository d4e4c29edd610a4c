"""HDF5 storage for training samples: one file per stage and split (SPEC §9).

File layout (``FORMAT_VERSION`` 1)::

    /                       attrs: format_version, size, channel_order="RGB", layout="NHWC",
                                   dtype="uint8", landmark_order, landmark_convention,
                                   offset_convention, box_convention, normalisation,
                                   labels (YAML), complete, plus every attr the generator passed
                                   (IoU rules, seed, resolved config as a YAML string, ...)
    /sources                str   [M]        source image paths; ``source`` indexes into it
    /pos, /part, /neg, /landmark             one group per sample kind, each with
        images              uint8   [N, S, S, 3]  RGB crops
        label               int8    [N]           1 / -1 / 0 / -2 (``mtcnn.structures.Label``)
        bbox                float32 [N, 4]        (gt - crop) / crop_side for x1, y1, x2, y2;
                                                  zeros for neg and landmark
        landmark            float32 [N, 10]       x1, y1, ..., x5, y5 in 0..1 of the crop
                                                  (LE, RE, N, LM, RM); zeros unless landmark
        source              int32   [N]           row of /sources, -1 when unknown
        box                 float32 [N, 4]        crop box x1, y1, x2, y2 in the source image
                                                  (NaN when unknown)
    /progress/committed_items int64 [K]       work items committed so far (resume support)
    attr ``progress`` (JSON) on / : {"items": K, "sources": M, "lengths": {kind: N}}

Every dataset is resizable along N (``maxshape=(None, ...)``) and chunked along N. The
per-sample metadata uses ``chunk`` rows per chunk; images use chunks of about
``image_chunk_bytes`` (65 KiB: 151 rows at 12 px, 9 rows at 48 px) because the mixed-ratio
loader reads random rows and HDF5 always reads (and decompresses) whole chunks. Images are
stored uncompressed by default: measured on real face crops, lzf saves only 3 % (12 px) to 9 %
(48 px) of the space but makes random minibatch reads 4 to 8 times slower.

Writing is atomic and resumable: :class:`SampleWriter` writes ``<name>.partial.h5`` and renames
it to the final name (``os.replace``) only on success, so the final name exists only for a
complete file. Generators process source images in a deterministic order in "work items" (an
integer id each) and call :meth:`SampleWriter.commit` after each unit; reopening with
``resume=True`` truncates every dataset back to the last committed lengths and lists the
committed ids in :attr:`SampleWriter.done_items`, so a crashed run continues without duplicated
or lost samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mtcnn.data.h5_util import _attr_equal, _attr_value, _locked, _locked_message, _one_line, _py, _read_rows
from mtcnn.errors import InputError
from mtcnn.structures import Label

FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("pos", "part", "neg", "landmark")
KIND_LABEL: dict[str, int] = {
    "pos": int(Label.POS),
    "part": int(Label.PART),
    "neg": int(Label.NEG),
    "landmark": int(Label.LANDMARK),
}
FIELDS: tuple[str, ...] = ("images", "label", "bbox", "landmark", "source", "box")
TRAIN_FIELDS: tuple[str, ...] = ("images", "label", "bbox", "landmark")
_META_FIELDS = ("label", "bbox", "landmark")  # small per-sample arrays the reader may keep in RAM

CONVENTIONS: dict[str, Any] = {
    "format_version": FORMAT_VERSION,
    "channel_order": "RGB",
    "layout": "NHWC",
    "dtype": "uint8",
    "landmark_order": "LE,RE,N,LM,RM",
    "landmark_convention": "x1,y1,...,x5,y5 interleaved, normalised to the crop: (x - crop_x1) / crop_side",
    "offset_convention": "(gt - crop) / crop_side for x1,y1,x2,y2; decode gt = crop + offset * crop_side",
    "box_convention": "x1,y1,x2,y2 float, 0-based pixels, width = x2 - x1",
    "normalisation": "(pixel - 127.5) / 128 at load time",
    "labels": "pos: 1\npart: -1\nneg: 0\nlandmark: -2\n",
}


class SampleFileError(InputError, ValueError):
    """A sample file is missing a part, has the wrong shape, or cannot be resumed."""


def partial_path(path: str | os.PathLike) -> Path:
    """The in-progress name of ``path``: ``x/rnet_train.h5`` -> ``x/rnet_train.partial.h5``."""
    path = Path(path)
    return path.with_suffix(".partial" + (path.suffix or ".h5"))


def is_complete(path: str | os.PathLike) -> bool:
    """True when the final (complete) sample file exists."""
    return Path(path).is_file()


class SampleWriter:
    """Append samples of one stage & split to an HDF5 file, atomically and resumably.

    ``SampleWriter(path, size, attrs, chunk=1024, compression="lzf", resume=False)``

    * ``path``: the final file name; data goes to :func:`partial_path` until :meth:`close`
      with ``complete=True`` (or leaving the ``with`` block without an exception) renames it.
    * ``attrs``: stored as file attributes next to the fixed :data:`CONVENTIONS`; dicts and
      dataclasses (e.g. the resolved config) are stored as YAML strings.
    * ``chunk``: rows per chunk of the metadata datasets and rows buffered in memory per kind
      before a write (memory stays bounded whatever the file size).
    * ``compression``: filter for the metadata datasets; ``image_compression`` (default none,
      see the module docstring) for ``images``.
    * ``resume``: continue an existing partial file: datasets are cut back to the last
      :meth:`commit` and :attr:`done_items` lists the committed work items. Without a partial
      file, ``resume=True`` starts a new one. ``resume=False`` always starts over (an existing
      partial file is replaced). A stored attribute that differs from ``attrs`` (another seed,
      another config) refuses the resume.
    * ``overwrite``: allow replacing an existing complete file (the old file stays in place
      until the new one is complete). Without it an existing final file is an error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: int,
        attrs: Mapping[str, Any] | None = None,
        chunk: int = 1024,
        compression: str | None = "lzf",
        *,
        image_compression: str | None = None,
        image_chunk_bytes: int = 65536,
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.size = int(size)
        if self.size <= 0:
            raise ValueError(f"sample size must be positive, got {size}")
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.chunk = int(chunk)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} already exists and is complete; delete it (or pass overwrite=True) to regenerate"
            )
        self._attrs = self._build_attrs(attrs or {})
        self._buffers: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in KINDS}
        self._buffered: dict[str, int] = {k: 0 for k in KINDS}
        self._source_ids: dict[str, int] = {}
        self._new_sources: list[str] = []
        self.done_items: set[int] = set()
        self._closed = False
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.partial.exists():
            self._f = self._open_resume()
        else:
            self._f = self._create(compression, image_compression, image_chunk_bytes)

    # ------------------------------------------------------------------ setup
    def _build_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: _attr_value(v) for k, v in CONVENTIONS.items()}
        out["size"] = self.size
        for key, value in attrs.items():
            value = _attr_value(value)
            if key in out and not _attr_equal(out[key], value):
                raise ValueError(f"attribute {key!r}={value!r} conflicts with the fixed file convention {out[key]!r}")
            out[key] = value
        return out

    def _open_partial(self, mode: str, failure: str) -> h5py.File:
        """Open the partial file; a lock or an unreadable file becomes one SampleFileError line."""
        try:
            return h5py.File(self.partial, mode)
        except OSError as e:
            if _locked(e):
                raise SampleFileError(_locked_message(self.partial)) from None
            raise SampleFileError(failure.format(path=self.partial, error=_one_line(e))) from None

    def _create(self, compression, image_compression, image_chunk_bytes) -> h5py.File:
        S = self.size
        f = self._open_partial("w", "cannot create {path}: {error}")
        for key, value in self._attrs.items():
            f.attrs[key] = value
        f.attrs["complete"] = False
        img_rows = int(max(1, min(self.chunk, image_chunk_bytes // (S * S * 3))))
        for kind in KINDS:
            g = f.create_group(kind)
            g.create_dataset("images", (0, S, S, 3), np.uint8, maxshape=(None, S, S, 3),
                             chunks=(img_rows, S, S, 3), compression=image_compression)
            g.create_dataset("label", (0,), np.int8, maxshape=(None,), chunks=(self.chunk,), compression=compression)
            for name, width in (("bbox", 4), ("landmark", 10), ("box", 4)):
                g.create_dataset(name, (0, width), np.float32, maxshape=(None, width),
                                 chunks=(self.chunk, width), compression=compression)
            g.create_dataset("source", (0,), np.int32, maxshape=(None,), chunks=(self.chunk,), compression=compression)
        f.create_dataset("sources", (0,), h5py.string_dtype("utf-8"), maxshape=(None,), chunks=(1024,))
        f.create_group("progress").create_dataset("committed_items", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        f.attrs["progress"] = json.dumps({"items": 0, "sources": 0, "lengths": {k: 0 for k in KINDS}})
        f.flush()
        return f

    def _open_resume(self) -> h5py.File:
        hint = f"delete {self.partial} to start over"
        f = self._open_partial("r+", "cannot resume from {path}: unreadable ({error}); " + hint)
        try:
            progress = json.loads(f.attrs["progress"])
            lengths = {k: int(progress["lengths"][k]) for k in KINDS}
            n_items, n_sources = int(progress["items"]), int(progress["sources"])
            for key, value in self._attrs.items():
                stored = _py(f.attrs[key]) if key in f.attrs else None
                if stored is None or not _attr_equal(stored, value):
                    shown = " ".join(str(stored).split())[:80]
                    now = " ".join(str(value).split())[:80]
                    raise SampleFileError(
                        f"cannot resume from {self.partial}: attribute {key!r} differs from this run "
                        f"(stored {shown!r}, now {now!r}); rerun with the original settings or {hint}"
                    )
            for kind in KINDS:
                for name in FIELDS:
                    ds = f[kind][name]
                    if ds.shape[0] < lengths[kind]:
                        raise SampleFileError(
                            f"cannot resume from {self.partial}: {kind}/{name} has {ds.shape[0]} rows, "
                            f"fewer than the {lengths[kind]} committed; {hint}"
                        )
                    ds.resize(lengths[kind], axis=0)
            items = f["progress/committed_items"]
            sources = f["sources"]
            if items.shape[0] < n_items or sources.shape[0] < n_sources:
                raise SampleFileError(f"cannot resume from {self.partial}: progress record is inconsistent; {hint}")
            items.resize(n_items, axis=0)
            sources.resize(n_sources, axis=0)
            self.done_items = set(int(i) for i in items[:])
            self._source_ids = {s: i for i, s in enumerate(sources.asstr()[:])}
            f.attrs["complete"] = False
            f.flush()
        except SampleFileError:
            f.close()
            raise
        except (KeyError, OSError, ValueError, TypeError) as e:
            f.close()
            raise SampleFileError(
                f"cannot resume from {self.partial}: not a readable partial sample file ({_one_line(e)}); {hint}"
            ) from None
        return f

    # ------------------------------------------------------------------ writing
    def source_index(self, source: str | os.PathLike) -> int:
        """Row of ``source`` in the file's ``sources`` table (added on first use)."""
        key = str(source)
        idx = self._source_ids.get(key)
        if idx is None:
            idx = len(self._source_ids)
            self._source_ids[key] = idx
            self._new_sources.append(key)
        return idx

    def _source_column(self, source: Any, n: int) -> np.ndarray:
        if source is None:
            return np.full(n, -1, np.int32)
        if isinstance(source, (str, os.PathLike)):
            return np.full(n, self.source_index(source), np.int32)
        arr = np.asarray(source)
        if arr.dtype.kind in "iu":
            if arr.shape != (n,):
                raise ValueError(f"source indices must have shape ({n},), got {arr.shape}")
            if arr.size and (arr.min() < -1 or arr.max() >= len(self._source_ids)):
                raise ValueError("source indices must come from SampleWriter.source_index()")
            return arr.astype(np.int32)
        if len(source) != n:
            raise ValueError(f"source must be one path or {n} paths, got {len(source)}")
        return np.array([self.source_index(s) for s in source], np.int32)

    def add(
        self,
        kind: str,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        bbox: np.ndarray | None = None,
        landmark: np.ndarray | None = None,
        source: str | Sequence[str] | np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> None:
        """Append a batch of ``n`` samples of one kind (any ``n``, vectorised).

        images uint8 [n,S,S,3] RGB; labels [n] (default: the kind's label; must match it);
        bbox [n,4] (required for pos/part, zeros/None otherwise); landmark [n,10] (required for
        landmark, zeros/None otherwise); source: one path, n paths or indices from
        :meth:`source_index`; box [n,4] crop box in the source image (NaN when None).
        """
        if self._closed:
            raise ValueError(f"{self.partial}: writer is closed")
        if kind not in KINDS:
            raise ValueError(f"unknown sample kind {kind!r}; expected one of {', '.join(KINDS)}")
        images = np.asarray(images)
        S = self.size
        if images.ndim != 4 or images.shape[1:] != (S, S, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"{kind} images must be uint8 [n,{S},{S},3] RGB, got {images.dtype} {list(images.shape)}"
            )
        n = images.shape[0]
        if n == 0:
            return
        want = KIND_LABEL[kind]
        if labels is None:
            label_arr = np.full(n, want, np.int8)
        else:
            label_arr = np.asarray(labels).reshape(-1)
            if label_arr.shape != (n,) or np.any(label_arr != want):
                raise ValueError(f"{kind} samples must all have label {want} (got {np.unique(label_arr).tolist()})")
            label_arr = label_arr.astype(np.int8)

        def column(value, width, name, required):
            if value is None:
                if required:
                    raise ValueError(f"{kind} samples need {name} [n,{width}]")
                return np.zeros((n, width), np.float32)
            arr = np.asarray(value, dtype=np.float32)
            if arr.shape != (n, width):
                raise ValueError(f"{kind} {name} must have shape ({n}, {width}), got {arr.shape}")
            if not required and np.any(arr != 0):
                raise ValueError(f"{kind} samples store {name} as zeros (it is meaningless for them)")
            return arr

        bbox_arr = column(bbox, 4, "bbox", kind in ("pos", "part"))
        lmk_arr = column(landmark, 10, "landmark", kind == "landmark")
        if box is None:
            box_arr = np.full((n, 4), np.nan, np.float32)
        else:
            box_arr = np.asarray(box, dtype=np.float32)
            if box_arr.shape != (n, 4):
                raise ValueError(f"{kind} box must have shape ({n}, 4), got {box_arr.shape}")
        src = self._source_column(source, n)
        self._buffers[kind].append(
            {"images": np.ascontiguousarray(images), "label": label_arr, "bbox": bbox_arr,
             "landmark": lmk_arr, "source": src, "box": box_arr}
        )
        self._buffered[kind] += n
        if self._buffered[kind] >= self.chunk:
            self._flush_kind(kind)

    def _flush_kind(self, kind: str) -> None:
        parts = self._buffers[kind]
        if not parts:
            return
        g = self._f[kind]
        for name in FIELDS:
            data = parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])
            ds = g[name]
            n0 = ds.shape[0]
            ds.resize(n0 + data.shape[0], axis=0)
            ds[n0:] = data
        self._buffers[kind] = []
        self._buffered[kind] = 0

    def _flush_all(self) -> None:
        for kind in KINDS:
            self._flush_kind(kind)
        if self._new_sources:
            ds = self._f["sources"]
            n0 = ds.shape[0]
            ds.resize(n0 + len(self._new_sources), axis=0)
            ds[n0:] = np.array(self._new_sources, dtype=object)
            self._new_sources = []

    def lengths(self) -> dict[str, int]:
        """Samples per kind written so far (committed or not, including buffered)."""
        return {k: int(self._f[k]["label"].shape[0]) + self._buffered[k] for k in KINDS}

    def commit(self, item_ids: Iterable[int] | int) -> None:
        """Mark work items as fully written: everything added so far survives a crash.

        Data is flushed to disk first, then the committed ids and the length of every dataset
        are recorded (one attribute write) and flushed again; a crash before that record leaves
        the previous commit in force.
        """
        ids = [int(item_ids)] if isinstance(item_ids, (int, np.integer)) else [int(i) for i in item_ids]
        dup = self.done_items.intersection(ids)
        if dup or len(set(ids)) != len(ids):
            raise ValueError(f"work items committed twice: {sorted(dup) or ids}")
        self._flush_all()
        self._f.flush()
        items = self._f["progress/committed_items"]
        n0 = items.shape[0]
        if ids:
            items.resize(n0 + len(ids), axis=0)
            items[n0:] = np.asarray(ids, np.int64)
        progress = {
            "items": n0 + len(ids),
            "sources": int(self._f["sources"].shape[0]),
            "lengths": {k: int(self._f[k]["label"].shape[0]) for k in KINDS},
        }
        self._f.attrs["progress"] = json.dumps(progress)
        self._f.flush()
        self.done_items.update(ids)

    def close(self, complete: bool = True) -> Path:
        """Finish. ``complete=True`` flushes everything and renames the partial file to the final
        name atomically; ``complete=False`` leaves the partial file for a later resume (samples
        added after the last :meth:`commit` are discarded on resume). Returns the file's path."""
        if self._closed:
            return self.path if complete else self.partial
        self._closed = True
        if not complete:
            self._f.close()
            return self.partial
        try:
            self._flush_all()
            self.commit([])
            self._f.attrs["complete"] = True
            self._f.flush()
        finally:
            self._f.close()
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.path)
        return self.path

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


class SampleReader:
    """Read samples from a file written by :class:`SampleWriter`.

    The HDF5 handle is opened lazily in each process (keyed by ``os.getpid()``), so a reader
    may be handed to forked DataLoader workers. The small per-sample arrays (label, bbox,
    landmark) are loaded into memory on first use when they take at most ``meta_cache_bytes``
    (plain numpy arrays, shared copy-on-write by forked workers); images are always read from
    the file, only the requested rows.
    """

    def __init__(self, path: str | os.PathLike, expected_size: int | None = None, *,
                 meta_cache_bytes: int = 256 << 20, rdcc_nbytes: int = 16 << 20):
        self.path = Path(path)
        self.meta_cache_bytes = meta_cache_bytes
        self.rdcc_nbytes = rdcc_nbytes
        self._f: h5py.File | None = None
        self._pid: int | None = None
        self._meta: dict[str, dict[str, np.ndarray]] | None = None
        if not self.path.is_file():
            partial = partial_path(self.path)
            more = (f" (an incomplete {partial.name} exists: generation has not finished; rerun it to resume)"
                    if partial.exists() else "")
            raise FileNotFoundError(f"sample file {self.path} not found{more}")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise SampleFileError(f"{self.path}: not a readable HDF5 file ({_one_line(e)})") from None
        try:
            self.attrs: dict[str, Any] = {k: _py(v) for k, v in f.attrs.items()}
            missing = [k for k in KINDS if k not in f or not isinstance(f[k], h5py.Group)]
            if missing:
                raise SampleFileError(f"{self.path}: missing group(s) {', '.join(missing)}; not a complete sample file")
            counts = {}
            for kind in KINDS:
                g = f[kind]
                absent = [name for name in TRAIN_FIELDS if name not in g]
                if absent:
                    raise SampleFileError(f"{self.path}: group {kind!r} lacks dataset(s) {', '.join(absent)}")
                n = g["images"].shape[0]
                shape = g["images"].shape[1:]
                if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
                    raise SampleFileError(f"{self.path}: {kind}/images has shape {list(g['images'].shape)}, expected [N,S,S,3]")
                for name in TRAIN_FIELDS[1:]:
                    if g[name].shape[0] != n:
                        raise SampleFileError(f"{self.path}: {kind}/{name} has {g[name].shape[0]} rows, images has {n}")
                counts[kind] = int(n)
            sizes = {f[k]["images"].shape[1] for k in KINDS}
            size = int(self.attrs.get("size", next(iter(sizes))))
            if sizes != {size}:
                raise SampleFileError(f"{self.path}: image sizes {sorted(sizes)} disagree with attribute size={size}")
            if expected_size is not None and size != int(expected_size):
                raise SampleFileError(f"{self.path} holds {size}x{size} samples, expected {expected_size}x{expected_size}")
            order = self.attrs.get("channel_order", "RGB")
            if order != "RGB":
                raise SampleFileError(f"{self.path}: channel_order is {order!r}, expected 'RGB'")
        finally:
            f.close()
        self.size = size
        self._counts = counts

    # ------------------------------------------------------------------ handles
    def _file(self) -> h5py.File:
        pid = os.getpid()
        if self._f is None or self._pid != pid:
            # A handle inherited across fork belongs to the parent: never touch it here.
            self._f = h5py.File(self.path, "r", rdcc_nbytes=self.rdcc_nbytes, rdcc_nslots=100_003)
            self._pid = pid
        return self._f

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None
        self._pid = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_f"] = None
        state["_pid"] = None
        state["_meta"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ queries
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def len(self, kind: str) -> int:
        self._check_kind(kind)
        return self._counts[kind]

    def __len__(self) -> int:
        return sum(self._counts.values())

    def sources(self) -> list[str]:
        f = self._file()
        return list(f["sources"].asstr()[:]) if "sources" in f else []

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown sample kind {kind!r}; expected one of {', '.join(KINDS)}")

    def load_meta(self) -> None:
        """Load label/bbox/landmark of every kind into memory if they fit ``meta_cache_bytes``."""
        if self._meta is not None:
            return
        total = sum(n * (1 + 4 * 4 + 10 * 4) for n in self._counts.values())
        meta: dict[str, dict[str, np.ndarray]] = {k: {} for k in KINDS}
        if total <= self.meta_cache_bytes:
            f = self._file()
            for kind in KINDS:
                for name in _META_FIELDS:
                    meta[kind][name] = f[kind][name][:]
        self._meta = meta

    def get(self, kind: str, indices, fields: Sequence[str] = FIELDS) -> dict[str, np.ndarray]:
        """Rows ``indices`` (any order, repeats allowed) of ``kind`` as a dict of numpy arrays.

        HDF5 needs increasing selections: rows are read once each in sorted order (contiguous
        runs in one call) and returned in the order asked.
        """
        self._check_kind(kind)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._counts[kind]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: {kind} index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        for name in fields:
            if name not in FIELDS:
                raise ValueError(f"unknown field {name!r}; expected some of {', '.join(FIELDS)}")
        if self._meta is None:
            self.load_meta()
        uniq, inverse = np.unique(idx, return_inverse=True)
        identity = uniq.size == idx.size  # sorted input without repeats: no reordering needed
        if identity:
            identity = bool(np.all(uniq == idx))
        out: dict[str, np.ndarray] = {}
        group = None
        for name in fields:
            cached = self._meta.get(kind, {}).get(name) if self._meta else None
            if cached is not None:
                out[name] = cached[idx]
                continue
            if group is None:
                group = self._file()[kind]
            rows = _read_rows(group[name], uniq)
            out[name] = rows if identity else rows[inverse]
        return out
