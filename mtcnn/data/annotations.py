"""Readers (and two writers) for the face annotation formats the project trains and evaluates on.

Every reader returns ``list[ImageAnnotation]``, one record per image, in one convention:

* boxes     float32 [M, 4] ``(x1, y1, x2, y2)``, 0-based pixels, width = x2 - x1 (no +1);
* landmarks float32 [M, K, 2] ``(x, y)``; K = 0 (shape ``(M, 0, 2)``) when the source has none,
  never ``None``. Five-point order: left eye, right eye, nose, left mouth corner, right mouth
  corner, "left" meaning the image's left. NaN marks a point the source does not give for one
  face while giving it for others (WIDER landmark side file, dlib boxes without parts);
* ignore    bool [M]: faces that evaluation and sample generation should neither count nor
  penalise (WIDER ``invalid``, zero-size boxes, dlib ``ignore='1'``, VOC ``difficult``);
* attributes: per-face extra arrays whose first dimension is M.

Malformed input raises :class:`AnnotationError`, whose message is one line
``"{file}:{line}: {problem}"`` so that editors and CI logs can jump to it.

Formats (quirks checked against the real files in ``data_root()``, see its README):

========================  =========================================================================
``wider``                 ``*_bbx_gt.txt``: path / count / count x ``x y w h blur expression
                          illumination invalid occlusion pose`` (:func:`read_wider`)
``cnn_facepoint``         ``path left right top bottom x1 y1 ... x5 y5``, CRLF, backslash paths
``fddb``                  ``*-ellipseList.txt``: path without .jpg / count / ``a b angle cx cy 1``
``dlib``                  dlib imglab XML: ``<image file><box top left width height><part>``
``voc``                   PASCAL VOC, one XML per image (the face_mask set)
``csv68``                 header row, then ``name,x0,y0,...,x67,y67`` (udacity68)
``list``                  the project's own list: ``path x1 y1 x2 y2 [x y]*K``
========================  =========================================================================
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np


__all__ = [
    "ANNOTATION_FORMATS",
    "AnnotationError",
    "ImageAnnotation",
    "WIDER_ATTRIBUTES",
    "ellipses_to_boxes",
    "landmarks_68_to_5",
    "read_68pt_csv",
    "read_annotations",
    "read_box_list",
    "read_cnn_facepoint",
    "read_dlib_xml",
    "read_fddb",
    "read_voc_dir",
    "read_voc_xml",
    "read_wider",
    "split_by_name",
    "write_landmark_sidefile",
    "write_wider",
]

PathLike = str | os.PathLike

#: WIDER per-face attribute columns after ``x y w h``, in file order (see the set's readme.txt).
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


# --------------------------------------------------------------------------------------------
# record and error types
# --------------------------------------------------------------------------------------------


class AnnotationError(ValueError):
    """A malformed or missing annotation file. ``str(err)`` is ``"{file}:{line}: {problem}"``.

    ``line`` is 1-based and left out of the message when it does not apply (a missing file, an
    XML element, which ElementTree gives no line for).
    """

    def __init__(self, file: PathLike, problem: str, line: int | None = None):
        self.file = str(file)
        self.line = line
        # One line, always: multi-line messages break "file:line:" jump-to-error in tools.
        self.problem = " ".join(str(problem).split())
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {self.problem}")

    def __reduce__(self):
        # Default exception pickling replays __init__ with str(self); keep the fields instead
        # so errors survive DataLoader worker processes intact.
        return (AnnotationError, (self.file, self.problem, self.line))


def _frozen_array(value: Any, dtype: Any) -> np.ndarray:
    # A read-only *view*: the record cannot be edited in place, the caller's array stays writable.
    arr = np.asarray(value, dtype=dtype).view()
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class ImageAnnotation:
    """All faces annotated in one image.

    path:       the image file; absolute, or joined to the ``images_root`` the reader was given.
    boxes:      float32 [M, 4] ``(x1, y1, x2, y2)``, 0-based pixels, width = x2 - x1.
    landmarks:  float32 [M, K, 2] ``(x, y)``; ``(M, 0, 2)`` when the source has no points.
                NaN marks a point missing for this face only.
    ignore:     bool [M]; True for faces to neither count as misses nor use as negatives.
    attributes: per-face extras, each an array whose first dimension is M (e.g. WIDER ``blur``
                int32 [M], FDDB ``ellipses`` float32 [M, 5], VOC ``names`` str [M]).
    width, height: image size in pixels when the annotation states it, else 0.

    Arrays are coerced to their dtypes and made read-only (the record is immutable: copy an
    array to edit it). Equality is identity (``eq=False``): arrays have no single truth value.
    """

    path: Path
    boxes: np.ndarray
    landmarks: np.ndarray
    ignore: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: coerce fields through object.__setattr__
        if not isinstance(self.path, Path):  # Path(Path) re-parses every part: slow for 10^4 records
            set_(self, "path", Path(self.path))
        boxes = _frozen_array(self.boxes, np.float32)
        if boxes.ndim == 1 and boxes.size == 0:
            boxes = _frozen_array(np.zeros((0, 4)), np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{self.path}: boxes must be [M, 4], got {boxes.shape}")
        m = boxes.shape[0]
        landmarks = _frozen_array(self.landmarks, np.float32)
        if landmarks.size == 0 and landmarks.ndim < 3:
            landmarks = _frozen_array(np.zeros((m, 0, 2)), np.float32)
        if landmarks.ndim != 3 or landmarks.shape[0] != m or landmarks.shape[2] != 2:
            raise ValueError(f"{self.path}: landmarks must be [{m}, K, 2], got {landmarks.shape}")
        ignore = _frozen_array(self.ignore, bool)
        if ignore.shape != (m,):
            raise ValueError(f"{self.path}: ignore must be [{m}], got {ignore.shape}")
        attributes = {}
        for key, value in dict(self.attributes).items():
            arr = _frozen_array(value, None)
            if arr.ndim == 0 or arr.shape[0] != m:
                raise ValueError(f"{self.path}: attribute {key!r} must have first dimension {m}, got {arr.shape}")
            attributes[key] = arr
        width, height = int(self.width), int(self.height)
        if width < 0 or height < 0:
            raise ValueError(f"{self.path}: width/height must be >= 0, got {width}x{height}")
        set_(self, "boxes", boxes)
        set_(self, "landmarks", landmarks)
        set_(self, "ignore", ignore)
        set_(self, "attributes", attributes)
        set_(self, "width", width)
        set_(self, "height", height)

    @property
    def num_faces(self) -> int:
        """M, the number of annotated faces (ignored ones included)."""
        return int(self.boxes.shape[0])

    @property
    def num_landmarks(self) -> int:
        """K, the points per face (0 when the source has none)."""
        return int(self.landmarks.shape[1])


def _record(
    path: Path,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    attributes: dict[str, np.ndarray] | None = None,
    width: int = 0,
    height: int = 0,
) -> ImageAnnotation:
    m = len(boxes)
    return ImageAnnotation(
        path=path,
        boxes=boxes,
        landmarks=np.zeros((m, 0, 2), np.float32) if landmarks is None else landmarks,
        ignore=np.zeros(m, bool) if ignore is None else ignore,
        attributes=attributes or {},
        width=width,
        height=height,
    )


# --------------------------------------------------------------------------------------------
# shared parsing helpers
# --------------------------------------------------------------------------------------------


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Lines without their ends (LF, CRLF and CR all accepted); AnnotationError if absent."""
    if not path.is_file():
        raise AnnotationError(path, "file not found" if not path.exists() else "not a file")
    try:
        # newline=None (universal newlines) turns CRLF into LF, so CNN_FacePoint's CRLF lists
        # need no special case.
        with open(path, encoding=encoding, errors="strict") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not {encoding} text ({e.reason} at byte {e.start})") from None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AnnotationError(path, "file not found" if not path.exists() else "not a file")


def _floats(tokens: Sequence[str], file: Path, line: int, what: str = "values") -> np.ndarray:
    try:
        out = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise AnnotationError(file, f"{what}: {bad!r} is not a number", line) from None
    if not np.isfinite(out).all():
        raise AnnotationError(file, f"{what}: non-finite number", line)
    return out


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_table(
    rows: list[list[str]], line_numbers: np.ndarray, file: Path, what: str
) -> np.ndarray:
    """float64 [len(rows), ncols] from equal-length token rows; one numpy call in the common case.

    Rows must already have equal lengths. On a bad token, a slow per-row pass finds its line.
    """
    ncols = len(rows[0]) if rows else 0
    if not rows:
        return np.zeros((0, ncols), np.float64)
    flat = list(itertools.chain.from_iterable(rows))
    try:
        # numpy's string->float cast is ~10x faster than float() per token on 1.6 M tokens.
        table = np.array(flat).astype(np.float64).reshape(len(rows), ncols)
    except ValueError:
        for row, ln in zip(rows, line_numbers):
            _floats(row, file, int(ln), what)
        raise AnnotationError(file, f"{what}: unparsable number") from None
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        raise AnnotationError(file, f"{what}: non-finite number", int(line_numbers[np.argmax(bad)]))
    return table


def _parse_lines(
    lines: list[str], ncols: int, line_numbers: np.ndarray, file: Path, what: str
) -> np.ndarray:
    """float64 [len(lines), ncols] from whitespace-separated number lines.

    np.loadtxt's C parser does the common case (WIDER train's 159k lines in ~0.1 s, checking
    the column count of every row); on any error a per-line pass names the offending line.
    """
    if not lines:
        return np.zeros((0, ncols), np.float64)
    try:
        table = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
        if table.shape[1] != ncols:
            raise ValueError("column count")
    except ValueError:
        for raw, ln in zip(lines, line_numbers.tolist()):
            tokens = raw.split()
            if len(tokens) != ncols:
                # One token where a face line belongs: the next image's name or count was reached,
                # so the count above promised more faces than its lines give.
                hint = " (a face count larger than the face lines that follow?)" if len(tokens) <= 1 else ""
                problem = f"{what}: expected {ncols} values, got {len(tokens)}: {raw.strip()!r}{hint}"
                raise AnnotationError(file, problem, ln)
            _floats(tokens, file, ln, what)
        raise AnnotationError(file, f"{what}: unparsable line") from None
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        raise AnnotationError(file, f"{what}: non-finite number", int(line_numbers[np.argmax(bad)]))
    return table


def _int_count(token_line: str, file: Path, line: int) -> int:
    text = token_line.strip()
    try:
        n = int(text)
    except ValueError:
        raise AnnotationError(file, f"expected a face count, got {text!r}", line) from None
    if n < 0:
        raise AnnotationError(file, f"negative face count {n}", line)
    return n


def _rel_to_posix(relpath: str) -> str:
    return relpath.strip().replace("\\", "/")


def _join(root: Path, relpath: str) -> Path:
    # An absolute path in the list stays absolute (Path's "/" already does that).
    return root / relpath


def _check_path_token(relpath: str) -> None:
    if not relpath or any(c.isspace() for c in relpath):
        raise ValueError(f"image path {relpath!r} is empty or contains whitespace; it cannot be written")


def _relative_posix(path: Path, images_root: Path) -> str:
    try:
        rel = path.relative_to(images_root)
    except ValueError:
        raise ValueError(f"{path} is not under images_root {images_root}") from None
    s = rel.as_posix()
    _check_path_token(s)
    return s


def _fmt(value: float) -> str:
    """Shortest text that parses back to exactly this float64 ("345" for 345.0)."""
    return np.format_float_positional(float(value), unique=True, trim="-")


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------------------------
# WIDER FACE
# --------------------------------------------------------------------------------------------


def _default_wider_images_root(path: Path) -> Path:
    # Official layout: wider_face_split/wider_face_<split>_bbx_gt.txt beside WIDER_<split>/images.
    for split in ("train", "val", "test"):
        if f"_{split}" in path.name:
            return path.parent.parent / f"WIDER_{split}" / "images"
    return path.parent


def read_wider(
    path: PathLike,
    images_root: PathLike | None = None,
    landmarks_path: PathLike | None = None,
) -> list[ImageAnnotation]:
    """Read an official WIDER FACE ``wider_face_{train,val}_bbx_gt.txt``.

    Layout: an image path line, a face-count line N, then N lines
    ``x y w h blur expression illumination invalid occlusion pose``; boxes become
    ``(x, y, x + w, y + h)``. Coordinates may be integers (official) or decimals (our writer).

    Images without faces. The official files encode them as count ``1`` followed by the
    all-zero line ``0 0 0 0 0 0 0 0 0 0`` (4 such images in train and 4 in val; the ``.mat``
    ground truth holds a ``[0 0 0 0]`` box for them too); the variant described in the
    literature, count ``0`` followed by that dummy line, is accepted as well. Both give a record
    with zero faces: the dummy line is consumed and never becomes a box. Hence train has
    159,420 faces here although its counts sum to the 159,424 usually quoted (val: 39,704 vs
    39,708).

    ignore = ``invalid == 1``, or ``w <= 0``, or ``h <= 0`` (27 real zero-size faces in train).
    attributes: ``blur expression illumination invalid occlusion pose``, int32 [M] each.

    Landmark side file (``landmarks_path``), written by :func:`write_landmark_sidefile` for
    the composite scenes. UTF-8 text, one face per line, whitespace separated::

        # comment lines and blank lines are skipped
        <image_relpath> <face_index> <x1> <y1> <x2> <y2> ... <xK> <yK>

    ``image_relpath`` is the image's path line from the ``bbx_gt`` file, verbatim ('/'
    separators, no whitespace); ``face_index`` is the 0-based position of the face among that
    image's N face lines; points are 0-based pixel (x, y) in the project's order (K = 5: left
    eye, right eye, nose, left mouth corner, right mouth corner, image-left). K is fixed for a
    file. Faces without a line get NaN points, so every record then has landmarks
    [M, K, 2]; an entry naming an unknown image or face, or a face twice, is an error.

    images_root: where the relative paths point; default ``../WIDER_<split>/images`` beside
    the ``wider_face_split`` folder (official layout), else the annotation file's folder.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else _default_wider_images_root(path)
    lines = _read_lines(path)
    n_lines = len(lines)

    # Pass 1 (pure Python over path/count lines only): block structure of the file.
    names: list[str] = []
    starts: list[int] = []  # index into `lines` of each image's first face line
    counts: list[int] = []
    try:
        i = 0
        while i < n_lines:
            name = lines[i].strip()
            if not name:
                i += 1
                continue
            if " " in name or "\t" in name:
                tokens = name.split()
                if len(tokens) == 4 + len(WIDER_ATTRIBUTES) and all(_is_float(t) for t in tokens):
                    prev = f" (face count on line {starts[-1]} too small?)" if starts else ""
                    raise AnnotationError(path, f"expected an image path, got a face line{prev}", i + 1)
            if i + 1 >= n_lines:
                raise AnnotationError(path, f"image {name!r} has no face-count line", i + 1)
            n = _int_count(lines[i + 1], path, i + 2)
            if n == 0:
                # "count 0 + dummy line" variant: swallow the dummy so it is not read as a path.
                nxt = lines[i + 2].split() if i + 2 < n_lines else []
                has_dummy = len(nxt) == len(WIDER_ATTRIBUTES) + 4 and all(_is_zero(t) for t in nxt)
                names.append(name)
                starts.append(i + 2)
                counts.append(0)
                i += 3 if has_dummy else 2
                continue
            if i + 2 + n > n_lines:
                raise AnnotationError(
                    path, f"image {name!r} announces {n} faces but only {n_lines - i - 2} lines remain", i + 2
                )
            names.append(name)
            starts.append(i + 2)
            counts.append(n)
            i += 2 + n
    except AnnotationError:
        # Pass 1 only looks at path/count lines; a bad face line earlier in the file (often the
        # real cause, e.g. a count too large swallowing the next path) must be reported first.
        _wider_table(lines, starts, counts, path)
        raise

    counts_arr = np.asarray(counts, dtype=np.int64)
    table, line_idx = _wider_table(lines, starts, counts, path)
    attrs = table[:, 4:]
    non_int = (attrs != np.round(attrs)).any(axis=1)
    if non_int.any():
        k = int(np.argmax(non_int))
        raise AnnotationError(path, "attribute values must be integers", int(line_idx[k]) + 1)

    # The zero-face marker: an image whose single face line is all zeros.
    offsets = np.concatenate([[0], np.cumsum(counts_arr)])
    single = np.flatnonzero(counts_arr == 1)
    is_marker = np.zeros(len(counts), bool)
    if len(single):
        is_marker[single] = (table[offsets[single]] == 0).all(axis=1)

    # float64 addition is exact for the writer's x and w (see write_wider), so x2 round-trips.
    boxes = np.empty((len(table), 4), np.float32)
    boxes[:, 0:2] = table[:, 0:2]
    boxes[:, 2:4] = table[:, 0:2] + table[:, 2:4]
    attr_int = attrs.astype(np.int32)
    invalid = attr_int[:, WIDER_ATTRIBUTES.index("invalid")]
    ignore_all = (invalid == 1) | (table[:, 2] <= 0) | (table[:, 3] <= 0)

    side = None
    if landmarks_path is not None:
        side = _read_landmark_sidefile(Path(landmarks_path), names, counts_arr, is_marker)

    records: list[ImageAnnotation] = []
    for k, name in enumerate(names):
        a, b = int(offsets[k]), int(offsets[k + 1])
        if is_marker[k]:
            a = b
        lm = None
        if side is not None:
            lm = side[k] if not is_marker[k] else side[k][:0]
        records.append(
            _record(
                _join(root, name),
                boxes[a:b],
                landmarks=lm,
                ignore=ignore_all[a:b],
                attributes={key: attr_int[a:b, c] for c, key in enumerate(WIDER_ATTRIBUTES)},
            )
        )
    return records


def _wider_table(
    lines: list[str], starts: list[int], counts: list[int], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """float64 [F, 10] of all face lines of the blocks found so far, and their 0-based line indices."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts_arr = np.asarray(starts, dtype=np.int64)
    total = int(counts_arr.sum())
    # 0-based line index of every face line, in file order (vectorised ragged arange).
    line_idx = np.repeat(starts_arr - np.cumsum(counts_arr) + counts_arr, counts_arr) + np.arange(total)
    table = _parse_lines(
        [lines[j] for j in line_idx.tolist()], 4 + len(WIDER_ATTRIBUTES), line_idx + 1, path,
        f"face line 'x y w h {' '.join(WIDER_ATTRIBUTES)}'",
    )
    return table, line_idx


def _is_zero(token: str) -> bool:
    try:
        return float(token) == 0.0
    except ValueError:
        return False


def _read_landmark_sidefile(
    path: Path, names: list[str], counts: np.ndarray, is_marker: np.ndarray
) -> list[np.ndarray]:
    """Per image, float32 [N_i, K, 2] points from a side file (NaN where a face has no line)."""
    lines = _read_lines(path)
    index = {name: k for k, name in enumerate(names)}
    k_points: int | None = None
    entries: list[tuple[int, int, int]] = []  # (image k, face j, line number)
    rows: list[list[str]] = []
    for ln, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 4 or len(tokens) % 2:
            raise AnnotationError(
                path, f"expected 'image_relpath face_index x1 y1 ... xK yK', got {len(tokens)} values", ln
            )
        kp = (len(tokens) - 2) // 2
        if k_points is None:
            k_points = kp
        elif kp != k_points:
            raise AnnotationError(path, f"{kp} points on this line but {k_points} on earlier lines", ln)
        name = _rel_to_posix(tokens[0])
        if name not in index:
            raise AnnotationError(path, f"image {name!r} is not in the box file", ln)
        try:
            j = int(tokens[1])
        except ValueError:
            raise AnnotationError(path, f"face index {tokens[1]!r} is not an integer", ln) from None
        k = index[name]
        n_faces = 0 if is_marker[k] else int(counts[k])
        if not 0 <= j < n_faces:
            raise AnnotationError(path, f"face index {j} out of range: {name!r} has {n_faces} faces", ln)
        entries.append((k, j, ln))
        rows.append(tokens[2:])
    k_points = k_points or 0
    table = _parse_table(rows, np.array([e[2] for e in entries]), path, "landmarks")
    out = [np.full((int(n), k_points, 2), np.nan, np.float32) for n in counts]
    seen: dict[tuple[int, int], int] = {}
    for (k, j, ln), pts in zip(entries, table):
        if (k, j) in seen:
            raise AnnotationError(path, f"face {j} of {names[k]!r} already given on line {seen[(k, j)]}", ln)
        seen[(k, j)] = ln
        out[k][j] = pts.reshape(k_points, 2)
    return out


def write_wider(path: PathLike, records: Iterable[ImageAnnotation], images_root: PathLike) -> None:
    """Write records as an official-style ``*_bbx_gt.txt`` that :func:`read_wider` reads back exactly.

    Each face line is ``x y w h blur expression illumination invalid occlusion pose`` with
    ``w = x2 - x1`` computed in float64 (exact for float32 inputs) and every number printed as
    the shortest text that parses back to the same float64, so boxes round-trip bit for bit.
    Attributes come from ``record.attributes`` when present, else 0; ``invalid`` falls back to
    ``record.ignore`` so the ignore flag survives a round trip. A record with no faces is
    written the way the official files write one (count ``1`` plus the all-zero line), which
    :func:`read_wider` reads as zero faces. Landmarks go to a side file
    (:func:`write_landmark_sidefile`). Paths are written relative to ``images_root``.
    """
    root = Path(images_root)
    out: list[str] = []
    zero_line = " ".join(["0"] * (4 + len(WIDER_ATTRIBUTES)))
    for rec in records:
        out.append(_relative_posix(rec.path, root))
        m = rec.num_faces
        if m == 0:
            out += ["1", zero_line]
            continue
        out.append(str(m))
        b = rec.boxes.astype(np.float64)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
        cols = []
        for key in WIDER_ATTRIBUTES:
            if key in rec.attributes:
                cols.append(np.asarray(rec.attributes[key]).astype(np.int64).reshape(m))
            elif key == "invalid":
                cols.append(rec.ignore.astype(np.int64))
            else:
                cols.append(np.zeros(m, np.int64))
        attrs = np.stack(cols, axis=1)
        for row, at in zip(xywh.tolist(), attrs.tolist()):
            out.append(" ".join([_fmt(v) for v in row] + [str(v) for v in at]))
    _atomic_write(Path(path), "\n".join(out) + "\n" if out else "")


def write_landmark_sidefile(path: PathLike, records: Iterable[ImageAnnotation], images_root: PathLike) -> None:
    """Write the landmark side file :func:`read_wider` takes as ``landmarks_path``.

    One line ``image_relpath face_index x1 y1 ... xK yK`` per face whose points are all finite
    (faces with NaN points and records with K = 0 are left out, which reads back as NaN).
    ``face_index`` is the face's position in ``record.boxes``, i.e. among its lines in the
    ``bbx_gt`` file written by :func:`write_wider` from the same records. All faces written
    must have the same K. Numbers are exact float32 values in shortest float64 text.
    """
    root = Path(images_root)
    out = ["# image_relpath face_index x1 y1 ... xK yK  (0-based pixels; face_index counts the image's faces "
           "in its bbx_gt file from 0)"]
    k_points: int | None = None
    for rec in records:
        if rec.num_faces == 0 or rec.num_landmarks == 0:
            continue
        if k_points is None:
            k_points = rec.num_landmarks
        elif rec.num_landmarks != k_points:
            raise ValueError(f"{rec.path}: {rec.num_landmarks} points per face, earlier records have {k_points}")
        rel = _relative_posix(rec.path, root)
        flat = rec.landmarks.reshape(rec.num_faces, -1).astype(np.float64)
        finite = np.isfinite(flat).all(axis=1)
        for j in np.flatnonzero(finite).tolist():
            out.append(" ".join([rel, str(j)] + [_fmt(v) for v in flat[j].tolist()]))
    _atomic_write(Path(path), "\n".join(out) + "\n")


# --------------------------------------------------------------------------------------------
# CNN_FacePoint (Sun, Wang, Tang 2013)
# --------------------------------------------------------------------------------------------


def read_cnn_facepoint(path: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read a CUHK CNN_FacePoint list (``trainImageList.txt`` / ``testImageList.txt``).

    Line: ``path left right top bottom x1 y1 ... x5 y5`` -- the box is left, RIGHT, top,
    BOTTOM (not x, y, w, h), becoming ``(left, top, right, bottom)``; the five points are
    already in the project's order. CRLF line ends and backslash paths (converted to '/') are
    accepted. Every line is one face of a distinct image, so one record per line with
    boxes [1, 4] and landmarks [1, 5, 2]. images_root defaults to the list file's folder.
    The train/test lists are the split; do not re-split them.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else path.parent
    lines = _read_lines(path)
    names: list[str] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for ln, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens:
            continue
        if len(tokens) != 15:
            raise AnnotationError(
                path, f"expected 'path left right top bottom x1 y1 ... x5 y5' (15 values), got {len(tokens)}", ln
            )
        names.append(_rel_to_posix(tokens[0]))
        rows.append(tokens[1:])
        line_numbers.append(ln)
    table = _parse_table(rows, np.asarray(line_numbers), path, "box/landmarks")
    boxes = table[:, [0, 2, 1, 3]].astype(np.float32)  # (left, top, right, bottom)
    landmarks = table[:, 4:].reshape(-1, 5, 2).astype(np.float32)
    return [
        _record(_join(root, name), boxes[k : k + 1], landmarks=landmarks[k : k + 1])
        for k, name in enumerate(names)
    ]


# --------------------------------------------------------------------------------------------
# FDDB
# --------------------------------------------------------------------------------------------


def ellipses_to_boxes(ellipses: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding boxes of rotated ellipses.

    ellipses: [M, 5] ``(major_radius, minor_radius, angle, cx, cy)`` with ``angle`` in radians
    between the major axis and the x axis (FDDB). Returns float32 [M, 4] ``(x1, y1, x2, y2)``
    with half-width ``sqrt((a cos t)^2 + (b sin t)^2)`` and half-height
    ``sqrt((a sin t)^2 + (b cos t)^2)``: the exact extents of the rotated ellipse.
    """
    e = np.asarray(ellipses, np.float64).reshape(-1, 5)
    a, b, t, cx, cy = e.T
    hw = np.hypot(a * np.cos(t), b * np.sin(t))
    hh = np.hypot(a * np.sin(t), b * np.cos(t))
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def read_fddb(folds_dir_or_file: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read FDDB ellipse annotations: one ``*-ellipseList.txt`` or a folder of them.

    A folder reads every ``FDDB-fold-*-ellipseList.txt`` in sorted order (folds 01..10).
    Layout: an image path without ``.jpg``, a count N, then N lines
    ``major_radius minor_radius angle center_x center_y 1``. Each ellipse becomes its exact
    axis-aligned bounding box (:func:`ellipses_to_boxes`); the raw ellipse is kept in
    ``attributes['ellipses']`` float32 [M, 5] ``(major, minor, angle, cx, cy)`` because
    FDDB's official scoring matches detections against ellipses, not boxes. Note these boxes
    include forehead and chin and are taller than MTCNN's boxes.

    images_root: default ``originalPics`` beside the ``FDDB-folds`` folder (official layout).
    Paths get ``.jpg`` appended.
    """
    src = Path(folds_dir_or_file)
    if src.is_dir():
        files = sorted(src.glob("FDDB-fold-*-ellipseList.txt"))
        if not files:
            raise AnnotationError(src, "no FDDB-fold-*-ellipseList.txt files in this folder")
        folds_dir = src
    else:
        _check_file(src)
        files = [src]
        folds_dir = src.parent
    root = Path(images_root) if images_root is not None else folds_dir.parent / "originalPics"
    records: list[ImageAnnotation] = []
    for f in files:
        records += _read_fddb_file(f, root)
    return records


def _read_fddb_file(path: Path, root: Path) -> list[ImageAnnotation]:
    lines = _read_lines(path)
    names: list[str] = []
    counts: list[int] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    i, n_lines = 0, len(lines)
    while i < n_lines:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= n_lines:
            raise AnnotationError(path, f"image {name!r} has no face-count line", i + 1)
        n = _int_count(lines[i + 1], path, i + 2)
        if i + 2 + n > n_lines:
            raise AnnotationError(
                path, f"image {name!r} announces {n} faces but only {n_lines - i - 2} lines remain", i + 2
            )
        for j in range(i + 2, i + 2 + n):
            tokens = lines[j].split()
            if len(tokens) != 6:
                raise AnnotationError(
                    path, f"expected 'major minor angle cx cy 1' (6 values), got {len(tokens)}", j + 1
                )
            rows.append(tokens[:5])
            line_numbers.append(j + 1)
        names.append(name)
        counts.append(n)
        i += 2 + n
    table = _parse_table(rows, np.asarray(line_numbers), path, "ellipse")
    if len(table) and ((table[:, 0] <= 0) | (table[:, 1] <= 0)).any():
        k = int(np.argmax((table[:, 0] <= 0) | (table[:, 1] <= 0)))
        raise AnnotationError(path, "ellipse radii must be positive", line_numbers[k])
    boxes = ellipses_to_boxes(table)
    ellipses = table.astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    return [
        _record(
            _join(root, name + ".jpg"),
            boxes[offsets[k] : offsets[k + 1]],
            attributes={"ellipses": ellipses[offsets[k] : offsets[k + 1]]},
        )
        for k, name in enumerate(names)
    ]


# --------------------------------------------------------------------------------------------
# dlib imglab XML
# --------------------------------------------------------------------------------------------


def _parse_xml(path: Path) -> ET.Element:
    _check_file(path)
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else None
        raise AnnotationError(path, f"XML parse error: {e.msg if hasattr(e, 'msg') else e}", line) from None


def _attr_float(el: ET.Element, key: str, file: Path, where: str) -> float:
    value = el.get(key)
    if value is None:
        raise AnnotationError(file, f"{where}: missing attribute {key!r}")
    try:
        out = float(value)
    except ValueError:
        raise AnnotationError(file, f"{where}: attribute {key}={value!r} is not a number") from None
    if not math.isfinite(out):
        raise AnnotationError(file, f"{where}: attribute {key}={value!r} is not finite")
    return out


def read_dlib_xml(path: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read a dlib imglab dataset XML (``dlib_faces/*.xml``).

    ``<image file='..' [width= height=]>`` holds ``<box top left width height [ignore='1']>``
    elements, optionally with ``<part name x y>`` children (68 iBUG points in the
    ``*_with_face_landmarks`` files). Boxes become ``(left, top, left + width, top + height)``;
    ``ignore='1'`` sets the ignore flag. Landmarks are [M, K, 2] with K = 1 + the largest
    numeric part name in the image (68 for iBUG), NaN for parts a box lacks; (M, 0, 2) when no
    box of the image has parts. images_root defaults to the XML file's folder.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else path.parent
    doc = _parse_xml(path)
    records: list[ImageAnnotation] = []
    for n_img, image in enumerate(doc.iter("image"), start=1):
        name = image.get("file")
        if not name:
            raise AnnotationError(path, f"<image> #{n_img} has no 'file' attribute")
        where = f"image {name!r}"
        boxes, ignore, parts = [], [], []
        for n_box, box in enumerate(image.iter("box"), start=1):
            bw = f"{where} box #{n_box}"
            left, top = _attr_float(box, "left", path, bw), _attr_float(box, "top", path, bw)
            w, h = _attr_float(box, "width", path, bw), _attr_float(box, "height", path, bw)
            boxes.append((left, top, left + w, top + h))
            ignore.append(box.get("ignore", "0").strip() not in ("0", "", "false"))
            pts = {}
            for part in box.iter("part"):
                pname = part.get("name", "")
                if not pname.isdigit():
                    raise AnnotationError(path, f"{bw}: part name {pname!r} is not a point index")
                pts[int(pname)] = (_attr_float(part, "x", path, bw), _attr_float(part, "y", path, bw))
            parts.append(pts)
        k = max((max(p) + 1 for p in parts if p), default=0)
        landmarks = np.full((len(boxes), k, 2), np.nan, np.float32)
        for j, pts in enumerate(parts):
            if pts:
                idx = np.fromiter(pts.keys(), dtype=np.int64, count=len(pts))
                landmarks[j, idx] = np.array(list(pts.values()), np.float32)
        width = int(float(image.get("width", 0) or 0))
        height = int(float(image.get("height", 0) or 0))
        records.append(
            _record(
                _join(root, name.replace("\\", "/")),
                np.array(boxes, np.float32).reshape(-1, 4),
                landmarks=landmarks,
                ignore=np.array(ignore, bool),
                width=width,
                height=height,
            )
        )
    return records


# --------------------------------------------------------------------------------------------
# PASCAL VOC (face_mask)
# --------------------------------------------------------------------------------------------


def _text_number(el: ET.Element, tag: str, file: Path, where: str) -> float:
    child = el.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(file, f"{where}: missing <{tag}>")
    try:
        value = float(child.text.strip())
    except ValueError:
        raise AnnotationError(file, f"{where}: <{tag}>{child.text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(file, f"{where}: <{tag}> is not finite")
    return value


def read_voc_xml(path: PathLike, images_dir: PathLike | None = None) -> ImageAnnotation:
    """Read one PASCAL VOC annotation file as one record.

    Every ``<object>`` is a face (face_mask names: ``with_mask``, ``without_mask``,
    ``mask_weared_incorrect``), kept in ``attributes['names']`` (str [M]). Boxes are
    ``(xmin, ymin, xmax, ymax)`` taken as given and clipped to ``[0, width] x [0, height]``
    from ``<size>`` (12 face_mask boxes end one pixel past the right edge). ``<difficult>1``
    sets ignore. The image is ``images_dir / <filename>`` (the XML's stem + ``.jpg`` when
    ``<filename>`` is absent); images_dir defaults to ``images`` beside the XML's folder.
    """
    path = Path(path)
    images = Path(images_dir) if images_dir is not None else path.parent.parent / "images"
    doc = _parse_xml(path)
    size = doc.find("size")
    width = height = 0
    if size is not None:
        width = int(_text_number(size, "width", path, "<size>"))
        height = int(_text_number(size, "height", path, "<size>"))
    filename = (doc.findtext("filename") or "").strip() or path.stem + ".jpg"
    boxes, names, difficult = [], [], []
    for n_obj, obj in enumerate(doc.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"object #{n_obj} ({name or 'unnamed'})"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError(path, f"{where}: no <bndbox>")
        boxes.append([_text_number(bnd, t, path, where) for t in ("xmin", "ymin", "xmax", "ymax")])
        names.append(name)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    b = np.array(boxes, np.float32).reshape(-1, 4)
    if width > 0 and height > 0:
        np.clip(b[:, 0::2], 0, width, out=b[:, 0::2])
        np.clip(b[:, 1::2], 0, height, out=b[:, 1::2])
    return _record(
        _join(images, filename),
        b,
        ignore=np.array(difficult, bool),
        attributes={"names": np.array(names, dtype=str).reshape(-1)},
        width=width,
        height=height,
    )


def read_voc_dir(annotations_dir: PathLike, images_dir: PathLike | None = None) -> list[ImageAnnotation]:
    """Every ``*.xml`` in ``annotations_dir`` (sorted by file name) through :func:`read_voc_xml`.

    images_dir defaults to ``images`` beside ``annotations_dir`` (the face_mask layout).
    """
    ann = Path(annotations_dir)
    if not ann.is_dir():
        raise AnnotationError(ann, "folder not found" if not ann.exists() else "not a folder")
    images = Path(images_dir) if images_dir is not None else ann.parent / "images"
    return [read_voc_xml(f, images) for f in sorted(ann.glob("*.xml"))]


# --------------------------------------------------------------------------------------------
# 68-point CSV (udacity68)
# --------------------------------------------------------------------------------------------


def _default_csv_images_root(path: Path) -> Path:
    # udacity68: training_frames_keypoints.csv describes training/, test_... describes test/.
    guess = path.parent / path.stem.split("_")[0]
    return guess if guess.is_dir() else path.parent


def read_68pt_csv(path: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read a header row then ``name,x0,y0,...,x67,y67`` rows (iBUG 68-point order).

    One record per row with landmarks [1, 68, 2]. The source has no face box, so the box is
    the tight bounding box of the 68 points (jaw to brows): narrower than a detector box, with
    no forehead. Points may lie slightly outside the image (6 udacity68 training rows); they
    are kept as given. images_root defaults to the folder named by the file name's first
    ``_`` token beside it (``training_frames_keypoints.csv`` -> ``training/``) if that exists,
    else the CSV's folder.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else _default_csv_images_root(path)
    _check_file(path)
    names: list[str] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        for row in reader:
            ln = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 1 + 136:
                raise AnnotationError(path, f"expected name + 136 coordinates, got {len(row) - 1} coordinates", ln)
            names.append(row[0].strip())
            rows.append([c.strip() for c in row[1:]])
            line_numbers.append(ln)
    table = _parse_table(rows, np.asarray(line_numbers), path, "coordinates")
    landmarks = table.reshape(-1, 68, 2).astype(np.float32)
    boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)
    return [
        _record(_join(root, name), boxes[k : k + 1], landmarks=landmarks[k : k + 1]) for k, name in enumerate(names)
    ]


def landmarks_68_to_5(landmarks68: np.ndarray) -> np.ndarray:
    """iBUG 68 points [M, 68, 2] -> the project's 5 points [M, 5, 2] (float32).

    Left eye = mean of points 36-41 (iBUG's "left eye" is the image-left one, i.e. the
    subject's right eye), right eye = mean of 42-47, nose tip = 30, mouth corners = 48 (left)
    and 54 (right). NaN inputs propagate.
    """
    p = np.asarray(landmarks68, np.float32)
    if p.ndim != 3 or p.shape[1:] != (68, 2):
        raise ValueError(f"expected [M, 68, 2] landmarks, got {p.shape}")
    return np.stack(
        [p[:, 36:42].mean(axis=1), p[:, 42:48].mean(axis=1), p[:, 30], p[:, 48], p[:, 54]], axis=1
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the project's own list format
# --------------------------------------------------------------------------------------------


def read_box_list(path: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read users' own data: ``path x1 y1 x2 y2 [x y]*K`` per line, one face per line.

    Lines naming the same image are merged into one record, records in first-seen order,
    faces in line order. K (0 allowed) must be the same on every line. Blank lines and lines
    starting with ``#`` are skipped. Paths (no whitespace; '\\' turned into '/') are relative
    to images_root, default the list file's folder; absolute paths are kept.
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else path.parent
    lines = _read_lines(path)
    names: list[str] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    k_points: int | None = None
    k_line = 0
    for ln, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 5 or (len(tokens) - 5) % 2:
            raise AnnotationError(path, f"expected 'path x1 y1 x2 y2 [x y]*K', got {len(tokens)} values", ln)
        kp = (len(tokens) - 5) // 2
        if k_points is None:
            k_points, k_line = kp, ln
        elif kp != k_points:
            raise AnnotationError(path, f"{kp} landmarks on this line but {k_points} on line {k_line}", ln)
        names.append(_rel_to_posix(tokens[0]))
        rows.append(tokens[1:])
        line_numbers.append(ln)
    k_points = k_points or 0
    table = _parse_table(rows, np.asarray(line_numbers), path, "box/landmarks")
    bad = (table[:, 2] < table[:, 0]) | (table[:, 3] < table[:, 1]) if len(table) else np.zeros(0, bool)
    if bad.any():
        raise AnnotationError(path, "box has x2 < x1 or y2 < y1", line_numbers[int(np.argmax(bad))])
    boxes = table[:, :4].astype(np.float32)
    landmarks = table[:, 4:].reshape(len(table), k_points, 2).astype(np.float32)
    order: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        order.setdefault(name, []).append(k)
    return [
        _record(_join(root, name), boxes[idx], landmarks=landmarks[idx]) for name, idx in order.items()
    ]


# --------------------------------------------------------------------------------------------
# dispatch and splits
# --------------------------------------------------------------------------------------------

ANNOTATION_FORMATS = ("wider", "cnn_facepoint", "fddb", "dlib", "voc", "csv68", "list")
AnnotationFormat = Literal["wider", "cnn_facepoint", "fddb", "dlib", "voc", "csv68", "list"]


def read_annotations(
    path: PathLike, format: AnnotationFormat | str, images_root: PathLike | None = None
) -> list[ImageAnnotation]:
    """Read ``path`` in the named format (one of :data:`ANNOTATION_FORMATS`).

    ``voc`` takes a folder of XML files (a single ``.xml`` file also works); ``fddb`` a folds
    folder or one ellipse list. images_root: see each reader for its default.
    """
    readers = {
        "wider": read_wider,
        "cnn_facepoint": read_cnn_facepoint,
        "fddb": read_fddb,
        "dlib": read_dlib_xml,
        "voc": _read_voc_any,
        "csv68": read_68pt_csv,
        "list": read_box_list,
    }
    reader = readers.get(str(format))
    if reader is None:
        choices = ", ".join(ANNOTATION_FORMATS)
        raise AnnotationError(path, f"unknown annotation format {format!r}; choose one of {choices}")
    return reader(path, images_root)


def _read_voc_any(path: PathLike, images_dir: PathLike | None = None) -> list[ImageAnnotation]:
    p = Path(path)
    if p.is_file():
        return [read_voc_xml(p, images_dir if images_dir is not None else p.parent.parent / "images")]
    return read_voc_dir(p, images_dir)


def split_by_name(
    records: Sequence[ImageAnnotation], part: Literal["train", "val"], train_fraction: float = 0.8
) -> list[ImageAnnotation]:
    """The project's split rule (data README): sort by image file name as strings, the first
    ``floor(train_fraction * n)`` are "train", the rest "val".

    Ties in file name are broken by the full path so the split is deterministic. Do not use
    it on cnn_facepoint, whose train and test lists already are the split.
    """
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be within [0, 1], got {train_fraction}")
    ordered = sorted(records, key=lambda r: (r.path.name, str(r.path)))
    n_train = int(math.floor(train_fraction * len(ordered)))
    return ordered[:n_train] if part == "train" else ordered[n_train:]
