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

Writing is atomic, crash-safe and resumable: :class:`SampleWriter` collects the samples in the
journal folder ``<name>.partial`` (append-only columns and an atomically replaced commit record,
:mod:`mtcnn.data.journal`; HDF5 itself is not safe against a kill while a file is open for
writing) and writes the HDF5 file, renamed to the final name (``os.replace``), only on success,
so the final name exists only for a complete file. Generators process source images in a
deterministic order in "work items" (an integer id each) and call :meth:`SampleWriter.commit`
after each unit; reopening with ``resume=True`` verifies the committed bytes, drops what came
after the last commit and lists the committed ids in :attr:`SampleWriter.done_items`, so a
killed run continues without duplicated, lost or damaged samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mtcnn.data.h5_util import _attr_equal, _attr_value, _locked_message, _one_line, _py, _read_rows
from mtcnn.data.journal import Journal, JournalDamaged, JournalLocked, describe_difference
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
    """The work-in-progress folder of ``path``: ``x/rnet_train.h5`` -> ``x/rnet_train.partial``."""
    path = Path(path)
    return path.with_suffix(".partial")


def is_complete(path: str | os.PathLike) -> bool:
    """True when the final (complete) sample file exists."""
    return Path(path).is_file()


class SampleWriter:
    """Append samples of one stage & split, crash-safely and resumably; an HDF5 file at the end.

    ``SampleWriter(path, size, attrs, chunk=1024, compression="lzf", resume=False)``

    * ``path``: the final file name. Work in progress lives in the journal folder
      :func:`partial_path` (see :mod:`mtcnn.data.journal`: nothing a commit covers is ever
      rewritten, so no kill can damage it); :meth:`close` with ``complete=True`` (or leaving the
      ``with`` block without an exception) writes the HDF5 file and renames it into place.
    * ``attrs``: file attributes next to the fixed :data:`CONVENTIONS` (dicts, dataclasses: YAML).
    * ``chunk``, ``compression``, ``image_compression``: the final file's metadata chunk rows and
      filters (images uncompressed by default, see the module docstring).
    * ``resume``: continue an existing journal: every committed byte is verified against its
      checksum, what was added after the last :meth:`commit` is dropped, and :attr:`done_items`
      lists the committed work items. A damaged journal is started over and :attr:`notice`
      says so in one line. Without a journal, ``resume=True`` starts a new one; ``resume=False``
      always starts over. A stored attribute that differs from ``attrs`` (another seed, another
      config) refuses the resume, naming the setting and both values.
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
        self.size, self.chunk = int(size), int(chunk)
        if self.size <= 0 or self.chunk <= 0:
            raise ValueError(f"sample size and chunk must be positive, got {size} and {chunk}")
        self.compression, self.image_compression = compression, image_compression
        self.image_chunk_bytes = int(image_chunk_bytes)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists and is complete; delete it (or pass overwrite=True) to regenerate")
        self._attrs = self._build_attrs(attrs or {})
        self._row_bytes = {name: _field_width(name, self.size) for name in FIELDS}
        self._counts: dict[str, int] = {k: 0 for k in KINDS}
        self._source_ids: dict[str, int] = {}
        self._new_sources: list[str] = []
        self.done_items: set[int] = set()
        self.notice: str | None = None  # one line for the user, e.g. a damaged partial file started over
        self._closed = False
        self._journal = self._open_journal(resume)

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

    def _open_journal(self, resume: bool) -> Journal:
        header = {"attrs": {k: _json_attr(v) for k, v in self._attrs.items()}}
        try:
            try:
                journal = Journal(self.partial, _COLUMNS, header, resume)
            except JournalDamaged as e:
                self.notice = f"{self.partial} is damaged ({e}); starting that file over"
                journal = Journal(self.partial, _COLUMNS, header, resume=False)
        except JournalLocked:
            raise SampleFileError(_locked_message(self.partial)) from None
        except OSError as e:
            raise SampleFileError(f"cannot write {self.partial}: {_one_line(e)}") from None
        try:
            self._check_attrs(journal.stored_header.get("attrs", {}), header["attrs"])
            self._restore(journal)
        except BaseException:
            journal.close()
            raise
        legacy = self.path.with_suffix(".partial.h5")  # written in place by older versions: not trustworthy
        if legacy.exists():
            legacy.unlink()
            self.notice = f"removed {legacy}, a partial file of an older version that a kill may have damaged; starting over"
        return journal

    def _check_attrs(self, stored: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        for key, value in now.items():
            old = stored.get(key)
            if old != value:
                raise SampleFileError(
                    f"cannot resume from {self.partial}: {describe_difference(key, old, value)}; "
                    f"rerun with the original settings, or delete {self.partial} (or pass --overwrite) to start over"
                )

    def _restore(self, journal: Journal) -> None:
        for kind in KINDS:
            self._counts[kind] = journal.committed[f"{kind}.label"]
        rows = [json.loads(line) for line in journal.read("sources").decode().splitlines()]
        self._source_ids = {s: i for i, s in enumerate(rows)}
        self.done_items = set(np.frombuffer(journal.read("items"), np.int64).tolist())

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
        columns = {"images": images, "label": label_arr, "bbox": bbox_arr, "landmark": lmk_arr, "source": src, "box": box_arr}
        for name, arr in columns.items():
            self._journal.append(f"{kind}.{name}", np.ascontiguousarray(arr, _DTYPES[name]).tobytes())
        self._counts[kind] += n

    def lengths(self) -> dict[str, int]:
        """Samples per kind written so far (committed or not)."""
        return dict(self._counts)

    def commit(self, item_ids: Iterable[int] | int) -> None:
        """Mark work items as fully written: everything added so far survives any kill."""
        ids = [int(item_ids)] if isinstance(item_ids, (int, np.integer)) else [int(i) for i in item_ids]
        dup = self.done_items.intersection(ids)
        if dup or len(set(ids)) != len(ids):
            raise ValueError(f"work items committed twice: {sorted(dup) or ids}")
        if self._new_sources:
            self._journal.append("sources", "".join(json.dumps(s) + "\n" for s in self._new_sources).encode())
            self._new_sources = []
        if ids:
            self._journal.append("items", np.asarray(ids, np.int64).tobytes())
        self._journal.commit()
        self.done_items.update(ids)

    def close(self, complete: bool = True) -> Path:
        """Finish. ``complete=True`` commits, writes the HDF5 file and renames it to the final name
        atomically; ``complete=False`` leaves the journal for a later resume (samples added after
        the last :meth:`commit` are dropped on resume). Returns the file's path."""
        if self._closed:
            return self.path if complete else self.partial
        self._closed = True
        if not complete:
            self._journal.close()
            return self.partial
        try:
            self.commit([])
            tmp = self.partial / "assembled.h5"
            self._assemble(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            self._journal.close()
            raise
        self._journal.remove()
        return self.path

    def _assemble(self, tmp: Path) -> None:
        """Write the committed samples as the final HDF5 file (layout in the module docstring)."""
        j, S = self._journal, self.size
        img_rows = int(max(1, min(self.chunk, self.image_chunk_bytes // (S * S * 3))))
        with h5py.File(tmp, "w") as f:
            for key, value in self._attrs.items():
                f.attrs[key] = value
            for kind in KINDS:
                g = f.create_group(kind)
                n = self._counts[kind]
                for name in FIELDS:
                    shape = _FIELD_SHAPES[name](S)
                    rows = img_rows if name == "images" else self.chunk
                    ds = g.create_dataset(name, (n, *shape), _DTYPES[name], maxshape=(None, *shape), chunks=(rows, *shape),
                                          compression=self.image_compression if name == "images" else self.compression)
                    step = max(1, (32 << 20) // self._row_bytes[name])
                    for a in range(0, n, step):
                        b = min(n, a + step)
                        raw = j.read(f"{kind}.{name}", a * self._row_bytes[name], (b - a) * self._row_bytes[name])
                        ds[a:b] = np.frombuffer(raw, _DTYPES[name]).reshape(b - a, *shape)
            sources = sorted(self._source_ids, key=self._source_ids.get)
            f.create_dataset("sources", data=np.array(sources, dtype=object), dtype=h5py.string_dtype("utf-8"),
                             maxshape=(None,), chunks=(1024,))
            items = np.frombuffer(j.read("items"), np.int64)
            f.create_group("progress").create_dataset("committed_items", data=items, maxshape=(None,), chunks=(4096,))
            f.attrs["progress"] = json.dumps({"items": int(items.size), "sources": len(sources), "lengths": self._counts})
            f.attrs["complete"] = True
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


_DTYPES = {"images": np.uint8, "label": np.int8, "bbox": np.float32, "landmark": np.float32, "source": np.int32, "box": np.float32}
_FIELD_SHAPES = {"images": lambda S: (S, S, 3), "label": lambda S: (), "bbox": lambda S: (4,), "landmark": lambda S: (10,),
                 "source": lambda S: (), "box": lambda S: (4,)}
_COLUMNS = [f"{kind}.{name}" for kind in KINDS for name in FIELDS] + ["sources", "items"]


def _field_width(name: str, size: int) -> int:
    return int(np.prod(_FIELD_SHAPES[name](size), dtype=np.int64)) * np.dtype(_DTYPES[name]).itemsize


def _json_attr(value: Any) -> Any:
    """An attribute value as plain JSON (what the journal stores and compares)."""
    return json.loads(json.dumps(value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value))


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

    def row_sources(self, kind: str) -> np.ndarray:
        """The source image path of every ``kind`` row (object array, ``""`` where unknown)."""
        self._check_kind(kind)
        table = np.asarray(self.sources() + [""], dtype=object)  # index -1 -> ""
        return table[self.get(kind, np.arange(self._counts[kind]), ("source",))["source"]]

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
