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
``coco``                  COCO JSON (COCO, CVAT, Label Studio exports): boxes, named keypoints
``yolo``                  a folder with ``images/`` and ``labels/``: ``class cx cy w h`` normalised
``pts68``                 a folder of images + iBUG 68-point ``.pts`` (300-W), 1-based -> 0-based
========================  =========================================================================
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtcnn.errors import InputError


__all__ = [
    "ANNOTATION_FORMATS",
    "AnnotationError",
    "ImageAnnotation",
    "WIDER_ATTRIBUTES",
    "ellipses_to_boxes",
    "landmarks_68_to_5",
    "read_68pt_csv",
    "read_pts",
    "read_pts68_dir",
    "five_point_record",
    "read_coco",
    "read_yolo",
    "read_annotations",
    "read_box_list",
    "read_cnn_facepoint",
    "read_dlib_xml",
    "read_fddb",
    "read_voc_dir",
    "read_voc_xml",
    "read_wider",
    "split_by_hash",
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


class AnnotationError(InputError, ValueError):
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


# --------------------------------------------------------------------------------------------
# dispatch and splits
# --------------------------------------------------------------------------------------------

ANNOTATION_FORMATS = ("wider", "cnn_facepoint", "fddb", "dlib", "voc", "csv68", "list", "webfaces", "coco", "yolo", "pts68")
AnnotationFormat = Literal["wider", "cnn_facepoint", "fddb", "dlib", "voc", "csv68", "list", "webfaces", "coco", "yolo", "pts68"]
#: The reader options each format takes (labelling tools' exports: class filter, keypoint names,
#: what an image without a face box is).
FORMAT_OPTIONS = {"coco": ("classes", "keypoints", "unannotated"), "yolo": ("classes", "unannotated")}
# pts68: what a .pts without its image means; webfaces: 5-point records with NaN mouth corners.
FORMAT_OPTIONS.update({"pts68": ("missing_images",), "webfaces": ("five_points",)})


def read_annotations(
    path: PathLike, format: AnnotationFormat | str, images_root: PathLike | None = None, **options: Any
) -> list[ImageAnnotation]:
    """Read ``path`` in the named format (one of :data:`ANNOTATION_FORMATS`).

    ``voc`` takes a folder of XML files (a single ``.xml`` file also works); ``fddb`` a folds
    folder or one ellipse list; ``yolo`` a dataset folder. images_root: see each reader for its
    default. ``options``: the reader's keyword options (:data:`FORMAT_OPTIONS`: ``classes``,
    ``keypoints``, ``unannotated`` for coco, see :func:`read_coco` / :func:`read_yolo`;
    ``missing_images`` for pts68, :func:`read_pts68_dir`; ``five_points`` for webfaces).
    """
    readers = {
        "wider": "read_wider",
        "cnn_facepoint": "read_cnn_facepoint",
        "fddb": "read_fddb",
        "dlib": "read_dlib_xml",
        "voc": "read_voc_any",
        "csv68": "read_68pt_csv",
        "list": "read_box_list",
        "webfaces": "read_webfaces",
        "coco": "read_coco",
        "yolo": "read_yolo",
        "pts68": "read_pts68_dir",
    }
    reader = readers.get(str(format))
    if reader is None:
        choices = ", ".join(ANNOTATION_FORMATS)
        raise AnnotationError(path, f"unknown annotation format {format!r}; choose one of {choices}")
    allowed = FORMAT_OPTIONS.get(str(format), ())
    unknown = [k for k in options if k not in allowed]
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else f"formats with options: {', '.join(FORMAT_OPTIONS)}"
        raise AnnotationError(path, f"format {format!r} has no option {', '.join(unknown)} ({takes})")
    return __getattr__(reader)(path, images_root, **options)


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


def split_by_hash(
    records: Sequence[ImageAnnotation], part: Literal["train", "val"], train_fraction: float = 0.8
) -> list[ImageAnnotation]:
    """A split that depends on each image's file name alone: ``val`` when
    ``crc32(file name) / 2**32 >= train_fraction``, else ``train``; records keep their order.

    Unlike :func:`split_by_name`, adding or removing other images never moves an image from one
    side to the other, and a set sorted by event (WIDER FACE) keeps every event on both sides.
    """
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be within [0, 1], got {train_fraction}")
    cut = train_fraction * 2**32
    is_val = [zlib.crc32(r.path.name.encode("utf-8")) >= cut for r in records]
    return [r for r, v in zip(records, is_val) if v == (part == "val")]


# The readers live in mtcnn.data.wider and mtcnn.data.annotation_formats (they build on the
# records and parsing helpers above); they stay importable from here, resolved on first use.
_READER_MODULES = {
    **dict.fromkeys(("read_wider", "write_wider", "write_landmark_sidefile"), "mtcnn.data.wider"),
    **dict.fromkeys(("ellipses_to_boxes", "landmarks_68_to_5", "read_68pt_csv", "read_box_list",
                     "read_cnn_facepoint", "read_dlib_xml", "read_fddb", "read_voc_any", "read_voc_dir",
                     "read_voc_xml", "read_coco", "read_yolo", "read_pts", "read_pts68_dir",
                     "five_point_record"), "mtcnn.data.annotation_formats"),
    "read_webfaces": "mtcnn.data.webfaces",
}


def __getattr__(name: str) -> Any:
    module = _READER_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
