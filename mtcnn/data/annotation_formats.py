"""Readers of the other annotation formats: CNN_FacePoint, FDDB, dlib XML, PASCAL VOC, 68-point CSV,
iBUG .pts folders, the project's box list, and the labelling tools' exports, COCO JSON and YOLO txt
(conventions: :mod:`mtcnn.data.annotations`)."""

from __future__ import annotations

import csv
import filecmp
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    PathLike,
    _check_file,
    _floats,
    _int_count,
    _is_float,
    _join,
    _parse_table,
    _read_lines,
    _record,
    _rel_to_posix,
)


# --------------------------------------------------------------------------------------------
# CNN_FacePoint (Sun, Wang, Tang 2013)
# --------------------------------------------------------------------------------------------


def _list_file(path: PathLike, images_root: PathLike | None) -> tuple[Path, Path, list[str]]:
    """A list file's path, its images root (default: the list's folder) and its lines."""
    path = Path(path)
    return path, Path(images_root) if images_root is not None else path.parent, _read_lines(path)


def read_cnn_facepoint(path: PathLike, images_root: PathLike | None = None) -> list[ImageAnnotation]:
    """Read a CUHK CNN_FacePoint list (``trainImageList.txt`` / ``testImageList.txt``).

    Line: ``path left right top bottom x1 y1 ... x5 y5`` -- the box is left, RIGHT, top,
    BOTTOM (not x, y, w, h), becoming ``(left, top, right, bottom)``; the five points are
    already in the project's order. CRLF line ends and backslash paths (converted to '/') are
    accepted. Every line is one face of a distinct image, so one record per line with
    boxes [1, 4] and landmarks [1, 5, 2]. images_root defaults to the list file's folder.
    The train/test lists are the split; do not re-split them.
    """
    path, root, lines = _list_file(path, images_root)
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
# iBUG .pts files (the 300-W training sets: LFPW, Helen, AFW)
# --------------------------------------------------------------------------------------------

#: What a reader does with an annotation whose image is absent: fail, or leave it out (counted).
MISSING_IMAGES_CHOICES = ("error", "skip")
_PTS_HEADER_KEYS = ("version", "n_points")


def _is_point_line(text: str) -> bool:
    tokens = text.split()
    return len(tokens) == 2 and all(_is_float(t) for t in tokens)


def read_pts(path: PathLike, n_points: int | None = 68) -> np.ndarray:
    """The points of one iBUG ``.pts`` file as float32 [K, 2] ``(x, y)``, 0-based pixels.

    Two layouts are read: the standard one, ``version: 1`` / ``n_points: 68`` / ``{`` / K lines
    ``x y`` / ``}`` (300-W's LFPW), and bare ``x y`` lines without a header (300-W's Helen and
    AFW as their public copies hold them). Blank lines are ignored. 300-W coordinates are 1-based
    (Matlab's: the top-left pixel's centre is (1, 1)); 1 is subtracted from x and y, so that
    centre becomes (0, 0) as everywhere in the library. ``n_points``: the number of points
    required (None: whatever the header or the lines give). Malformed files raise
    :class:`AnnotationError` naming the file and the line.
    """
    path = Path(path)
    # utf-8-sig: a byte-order mark some editors write is not part of the first line.
    numbered = [(ln, raw.strip()) for ln, raw in enumerate(_read_lines(path, "utf-8-sig"), start=1) if raw.strip()]
    if not numbered:
        raise AnnotationError(path, "empty .pts file")
    if _is_point_line(numbered[0][1]):  # bare "x y" lines
        body = numbered
    else:
        declared, declared_line, opening = None, 0, None
        for i, (ln, text) in enumerate(numbered):
            if text == "{":
                opening = i
                break
            key, sep, value = text.partition(":")
            key = key.strip().lower()
            if not sep or key not in _PTS_HEADER_KEYS:
                raise AnnotationError(path, f"expected a header line 'version: 1' or 'n_points: N', or '{{', got {text!r}", ln)
            if key == "n_points":
                value = value.strip()
                if not value.isdigit():
                    raise AnnotationError(path, f"n_points: {value!r} is not a point count", ln)
                declared, declared_line = int(value), ln
        if opening is None:
            raise AnnotationError(path, "header without the '{' that opens the points", numbered[-1][0])
        if declared is None:
            raise AnnotationError(path, "header without 'n_points'", numbered[opening][0])
        closing = next((j for j in range(opening + 1, len(numbered)) if numbered[j][1] == "}"), None)
        if closing is None:
            raise AnnotationError(path, "no '}' closing the points", numbered[-1][0])
        if closing + 1 < len(numbered):
            raise AnnotationError(path, f"text after the closing '}}': {numbered[closing + 1][1]!r}", numbered[closing + 1][0])
        body = numbered[opening + 1 : closing]
        if len(body) != declared:
            raise AnnotationError(path, f"n_points: {declared} declared, {len(body)} point lines given", declared_line)
    for ln, text in body:
        tokens = text.split()
        if len(tokens) != 2:
            raise AnnotationError(path, f"expected a point 'x y' (2 values), got {len(tokens)}: {text!r}", ln)
    points = _parse_table([text.split() for _, text in body], np.asarray([ln for ln, _ in body]), path, "point")
    if n_points is not None and len(points) != n_points:
        raise AnnotationError(path, f"{len(points)} points, expected {n_points}", body[-1][0] if body else None)
    return (points - 1.0).astype(np.float32)


def _copy_key(stem: str) -> tuple[str, int]:
    """``"1130084326_2"`` -> ``("1130084326", 2)``: 300-W names each face's copy of a photo ``<photo>_<n>``."""
    prefix, sep, number = stem.rpartition("_")
    return (prefix, int(number)) if sep and number.isdigit() else (stem, 0)


def read_pts68_dir(
    path: PathLike, images_root: PathLike | None = None, *, missing_images: str = "error"
) -> list[ImageAnnotation]:
    """Read a folder of images with their iBUG 68-point ``.pts`` files (the 300-W training sets
    ``lfpw/trainset``, ``helen/trainset``, ``afw/afw``), or one ``.pts`` file.

    Each ``*.pts`` is one face (points: :func:`read_pts`, 1-based -> 0-based); its image is the
    file of the same stem with an image extension in images_root (default: the ``.pts`` file's
    folder). Landmarks are [M, 68, 2] in the iBUG order (36-41 the image-left eye); the box is
    the tight extent of the 68 points (jaw to brows, as :func:`read_68pt_csv`). The ``.pts`` file
    of each face is kept in ``attributes['pts']`` (str [M]).

    300-W stores one copy of a photo per face (``<photo>_1.jpg``, ``<photo>_2.jpg``, ...): images
    with the same bytes (AFW's copies) become ONE record holding all their faces, named by the
    first copy, so a split by file name keeps a photo's faces together and no face of it is left
    unannotated. (Helen's ``_N`` files are different crops: separate records.) Records and faces
    follow the ``.pts`` names, ``_N`` in numeric order.

    missing_images: a ``.pts`` without its image is an error (``"error"``, the default) or left out
    (``"skip"``: one line on stderr counts them; the public copy of LFPW lacks 6 of its 811 images).
    """
    from mtcnn.io import IMAGE_SUFFIXES

    src = Path(path)
    if missing_images not in MISSING_IMAGES_CHOICES:
        raise AnnotationError(src, f"missing_images={missing_images!r} must be one of {', '.join(MISSING_IMAGES_CHOICES)}")
    if src.is_dir():
        pts_files = sorted(src.glob("*.pts"), key=lambda f: _copy_key(f.stem))
        if not pts_files:
            raise AnnotationError(src, "no .pts files in this folder")
        folder = src
    else:
        _check_file(src)
        pts_files, folder = [src], src.parent
    root = Path(images_root) if images_root is not None else folder
    if not root.is_dir():
        raise AnnotationError(root, "images folder not found" if not root.exists() else "images folder is not a folder")
    image_of: dict[str, Path] = {}
    rank = {s: k for k, s in enumerate(IMAGE_SUFFIXES)}
    for f in sorted((q for q in root.iterdir() if q.suffix.lower() in rank), key=lambda q: (q.stem, rank[q.suffix.lower()])):
        image_of.setdefault(f.stem, f)

    faces: list[tuple[Path, Path, np.ndarray]] = []  # (image, pts file, points)
    missing: list[Path] = []
    for f in pts_files:
        image = image_of.get(f.stem)
        if image is None or not image.is_file():
            if missing_images == "error":
                raise AnnotationError(f, f"no image {f.stem}.* in {root} (missing_images: skip leaves such faces out)")
            missing.append(f)
            continue
        faces.append((image, f, read_pts(f, 68)))
    if missing:
        print(f"{src}: {len(missing)} of {len(pts_files)} .pts files have no image and are left out "
              f"(missing_images: skip), e.g. {missing[0].name}", file=sys.stderr)

    groups: list[list[tuple[Path, Path, np.ndarray]]] = []
    by_size: dict[int, list[list[tuple[Path, Path, np.ndarray]]]] = {}  # candidates for the same bytes
    for face in faces:
        candidates = by_size.setdefault(face[0].stat().st_size, [])
        for group in candidates:
            if group[0][0] == face[0] or filecmp.cmp(group[0][0], face[0], shallow=False):
                group.append(face)
                break
        else:
            candidates.append([face])
            groups.append(candidates[-1])
    records = []
    for group in groups:
        landmarks = np.stack([p for _, _, p in group])
        boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)
        records.append(_record(group[0][0], boxes, landmarks=landmarks,
                               attributes={"pts": np.array([f.name for _, f, _ in group], dtype=str)}))
    return records


def five_point_record(record: ImageAnnotation) -> ImageAnnotation:
    """``record`` with the project's 5 points: 68 iBUG points reduced by :func:`landmarks_68_to_5`,
    5 points kept as they are (NaN = a missing point), a record without faces given (0, 5, 2).
    Any other point count raises ``ValueError``."""
    import dataclasses

    k = record.num_landmarks
    if k == 5:
        return record
    if k == 68:
        return dataclasses.replace(record, landmarks=landmarks_68_to_5(record.landmarks))
    if record.num_faces == 0:
        return dataclasses.replace(record, landmarks=np.zeros((0, 5, 2), np.float32))
    raise ValueError(f"{record.path}: {k} points per face; only 68 (iBUG) or 5 points give the 5-point layout")


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
    path, root, lines = _list_file(path, images_root)
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


def read_voc_any(path: PathLike, images_dir: PathLike | None = None) -> list[ImageAnnotation]:
    """A VOC folder of XML files, or one XML file (images in ``../images`` by default)."""
    p = Path(path)
    if p.is_file():
        return [read_voc_xml(p, images_dir if images_dir is not None else p.parent.parent / "images")]
    return read_voc_dir(p, images_dir)


# --------------------------------------------------------------------------------------------
# labelling tools' exports: COCO JSON and YOLO txt
# --------------------------------------------------------------------------------------------

#: The project's five points, in order ("left" = the image's left), as COCO keypoint mappings name them.
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: What becomes of an image with no face box: left out, or used as a face-free photo.
UNANNOTATED_CHOICES = ("skip", "negatives")


def _check_unannotated(path: Path, unannotated: str) -> None:
    if unannotated not in UNANNOTATED_CHOICES:
        raise AnnotationError(path, f"unannotated={unannotated!r} must be one of {', '.join(UNANNOTATED_CHOICES)}")


def _class_key(value: object) -> str:
    return str(value).strip()


def _keypoint_mapping(path: Path, keypoints: dict | None) -> dict[str, int] | None:
    """The user's keypoint name -> index of our point; checked once per file."""
    if keypoints is None:
        return None
    if not isinstance(keypoints, dict) or not keypoints:
        raise AnnotationError(path, f"keypoints must map your keypoint names to ours ({', '.join(FIVE_POINT_NAMES)}), got {keypoints!r}")
    out: dict[str, int] = {}
    taken: dict[int, str] = {}
    for theirs, ours in keypoints.items():
        if ours not in FIVE_POINT_NAMES:
            raise AnnotationError(path, f"keypoints: {theirs!r} maps to {ours!r}, which is not one of {', '.join(FIVE_POINT_NAMES)}")
        k = FIVE_POINT_NAMES.index(ours)
        if k in taken:
            raise AnnotationError(path, f"keypoints: {taken[k]!r} and {theirs!r} both map to {ours!r}")
        taken[k] = str(theirs)
        out[str(theirs)] = k
    return out


def _coco_int_or_str(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def _finite_numbers(value: object, n: int | None = None) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _coco_images_root(path: Path, images: list[dict]) -> Path:
    """Default images folder of a COCO file: the first of its own folder, ``images/`` beside it,
    ``../images`` and ``../images/default`` (CVAT) that holds the first listed image."""
    candidates = [path.parent, path.parent / "images", path.parent.parent / "images", path.parent.parent / "images" / "default"]
    first = next((str(im.get("file_name", "")) for im in images if isinstance(im, dict) and im.get("file_name")), "")
    name = _rel_to_posix(first)
    for root in candidates:
        if name and (root / name).is_file():
            return root
    return path.parent


def read_coco(
    path: PathLike,
    images_root: PathLike | None = None,
    *,
    classes: Sequence[str | int] | None = None,
    keypoints: dict[str, str] | None = None,
    unannotated: str = "skip",
) -> list[ImageAnnotation]:
    """Read a COCO detection / keypoint JSON file, as COCO itself, CVAT ("COCO 1.0", "COCO
    Keypoints 1.0") and Label Studio ("COCO") export it.

    ``images`` give the photos (``id``, ``file_name``, optional ``width`` / ``height``), each
    ``annotations`` entry one box: ``bbox`` ``[x, y, w, h]`` in pixels becomes
    ``(x, y, x + w, y + h)``, clipped to the image when its size is given; ``iscrowd: 1``, Label
    Studio's ``ignore: 1`` and zero-size boxes set the ignore flag. ``classes``: the category
    names (or ids) that are faces; null: every annotation. Category names go to
    ``attributes['names']``.

    Keypoints (``[x, y, v] * K`` against the category's ``keypoints`` names): ``keypoints`` maps
    your names to ours (:data:`FIVE_POINT_NAMES`; "left" is the image's left, so a subject's left
    eye is our ``right_eye``); without it, categories whose names already are ours map by name.
    Landmarks are then [M, 5, 2], NaN for points not labelled (``v = 0``) and for faces without
    points; else (M, 0, 2).

    ``unannotated``: an image with no face box is left out (``skip``, the default: an image a
    labeller never reached looks the same) or kept as a face-free photo (``negatives``).
    images_root: default the JSON file's folder, or ``images/`` beside it, ``../images``,
    ``../images/default``, whichever holds the first listed image. An absolute ``file_name`` that
    does not exist (a labelling server's upload path) is looked up by its file name there.

    Malformed input raises :class:`AnnotationError` naming the file, the entry
    (``annotations[3] (id 17)``) and the problem.
    """
    import json

    path = Path(path)
    _check_file(path)
    _check_unannotated(path, unannotated)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not utf-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"not valid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    if not isinstance(doc, dict):
        raise AnnotationError(path, "not a COCO file: the top level must be an object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            what = "missing" if key not in doc else f"not a list ({type(doc[key]).__name__})"
            raise AnnotationError(path, f"not a COCO file: '{key}' is {what}")
    raw_categories = doc.get("categories", [])
    if not isinstance(raw_categories, list):
        raise AnnotationError(path, f"'categories' is not a list ({type(raw_categories).__name__})")

    # categories: id -> (name, keypoint names)
    categories: dict[object, tuple[str, list[str]]] = {}
    for i, cat in enumerate(raw_categories):
        where = f"categories[{i}]"
        if not isinstance(cat, dict) or not _coco_int_or_str(cat.get("id")):
            raise AnnotationError(path, f"{where}: needs an 'id' (integer or string)")
        if not isinstance(cat.get("name"), str):
            raise AnnotationError(path, f"{where} (id {cat['id']}): needs a 'name'")
        names = cat.get("keypoints", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AnnotationError(path, f"{where} (id {cat['id']}): 'keypoints' must be a list of names")
        if cat["id"] in categories:
            raise AnnotationError(path, f"{where}: id {cat['id']} is used twice")
        categories[cat["id"]] = (cat["name"], names)

    wanted: set[object] | None = None
    if classes is not None:
        if not categories:
            raise AnnotationError(path, "classes: the file has no 'categories' to choose from")
        by_name = {name: cid for cid, (name, _) in categories.items()}
        wanted = set()
        for c in classes:
            key = _class_key(c)
            if key in by_name:
                wanted.add(by_name[key])
            elif key.lstrip("-").isdigit() and int(key) in categories:
                wanted.add(int(key))
            elif key in categories:
                wanted.add(key)
            else:
                known = ", ".join(f"{name} (id {cid})" for cid, (name, _) in categories.items())
                raise AnnotationError(path, f"classes: {key!r} is not a category of this file (categories: {known})")

    mapping = _keypoint_mapping(path, keypoints)
    point_index: dict[object, list[tuple[int, int]]] = {}  # category -> [(their index, our index)]
    for cid, (name, names) in categories.items():
        if mapping is not None:
            pairs = [(j, mapping[n]) for j, n in enumerate(names) if n in mapping]
        else:
            pairs = [(j, FIVE_POINT_NAMES.index(n)) for j, n in enumerate(names) if n in FIVE_POINT_NAMES]
            if len(pairs) < len(FIVE_POINT_NAMES):  # names that are not all ours: no guess by name
                pairs = []
        if pairs:
            point_index[cid] = pairs
    if mapping is not None and not point_index:
        have = sorted({n for _, names in categories.values() for n in names})
        raise AnnotationError(path, f"keypoints: none of {', '.join(map(repr, mapping))} is a keypoint name of this file "
                                    f"(its names: {', '.join(have) if have else 'none'})")
    k_points = len(FIVE_POINT_NAMES) if point_index else 0

    images: dict[object, dict] = {}
    order: list[object] = []
    for i, im in enumerate(doc["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict) or not _coco_int_or_str(im.get("id")):
            raise AnnotationError(path, f"{where}: needs an 'id' (integer or string)")
        where = f"{where} (id {im['id']})"
        if not isinstance(im.get("file_name"), str) or not im["file_name"].strip():
            raise AnnotationError(path, f"{where}: needs a 'file_name'")
        for key in ("width", "height"):
            v = im.get(key, 0)
            if v is None:
                v = 0
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AnnotationError(path, f"{where}: {key}={v!r} is not a size in pixels")
        if im["id"] in images:
            raise AnnotationError(path, f"{where}: id {im['id']} is used twice")
        images[im["id"]] = {"name": _rel_to_posix(im["file_name"]), "width": int(im.get("width") or 0),
                            "height": int(im.get("height") or 0), "boxes": [], "ignore": [], "names": [], "points": []}
        order.append(im["id"])

    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise AnnotationError(path, f"annotations[{i}]: not an object")
        where = f"annotations[{i}] (id {ann.get('id')})" if "id" in ann else f"annotations[{i}]"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise AnnotationError(path, f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        cid = ann.get("category_id")
        if categories and cid not in categories:
            raise AnnotationError(path, f"{where}: category_id {cid!r} is not in 'categories'")
        if wanted is not None and cid not in wanted:
            continue
        bbox = ann.get("bbox")
        if not _finite_numbers(bbox, 4):
            raise AnnotationError(path, f"{where}: bbox must be [x, y, width, height] (4 numbers), got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise AnnotationError(path, f"{where}: bbox {bbox!r} has a negative width or height")
        flagged = any(ann.get(key) in (1, True) for key in ("iscrowd", "ignore"))
        image["boxes"].append((x, y, x + w, y + h))
        image["ignore"].append(flagged or w == 0 or h == 0)
        image["names"].append(categories[cid][0] if categories else "")
        points = np.full((k_points, 2), np.nan, np.float32)
        raw_points = ann.get("keypoints")
        if k_points and raw_points is not None and cid in point_index:
            n_names = len(categories[cid][1])
            if not _finite_numbers(raw_points, 3 * n_names):
                got = len(raw_points) if isinstance(raw_points, list) else type(raw_points).__name__
                raise AnnotationError(path, f"{where}: keypoints must be {3 * n_names} numbers (x, y, v for each of "
                                            f"category {categories[cid][0]!r}'s {n_names} names), got {got}")
            for j, k in point_index[cid]:
                px, py, v = raw_points[3 * j: 3 * j + 3]
                if v > 0:
                    points[k] = (px, py)
        image["points"].append(points)

    root = Path(images_root) if images_root is not None else _coco_images_root(path, doc["images"])
    records: list[ImageAnnotation] = []
    for image_id in order:
        image = images[image_id]
        if not image["boxes"] and unannotated == "skip":
            continue
        name = image["name"]
        image_path = _join(root, name)
        if _is_absolute_name(name) and not image_path.exists():
            image_path = root / Path(name).name
        b = np.array(image["boxes"], np.float32).reshape(-1, 4)
        width, height = image["width"], image["height"]
        if width > 0 and height > 0:
            np.clip(b[:, 0::2], 0, width, out=b[:, 0::2])
            np.clip(b[:, 1::2], 0, height, out=b[:, 1::2])
        records.append(_record(
            image_path, b,
            landmarks=np.array(image["points"], np.float32).reshape(len(b), k_points, 2),
            ignore=np.array(image["ignore"], bool),
            attributes={"names": np.array(image["names"], dtype=str).reshape(-1)},
            width=width, height=height,
        ))
    return records


def _is_absolute_name(name: str) -> bool:
    return name.startswith("/") or (len(name) > 2 and name[1] == ":" and name[2] in "/\\")


def _yolo_class_names(folder: Path) -> tuple[list[str] | None, Path | None]:
    """Class names of a YOLO dataset folder: ``classes.txt`` (Label Studio, LabelImg), ``obj.names``
    (CVAT YOLO 1.1), or ``names`` in ``data.yaml`` / ``dataset.yaml`` (Ultralytics); None without one."""
    for name in ("classes.txt", "obj.names"):
        f = folder / name
        if f.is_file():
            return [line.strip() for line in _read_lines(f) if line.strip()], f
    for name in ("data.yaml", "dataset.yaml"):
        f = folder / name
        if not f.is_file():
            continue
        import yaml

        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise AnnotationError(f, f"not valid YAML ({' '.join(str(e).split())[:160]})") from None
        names = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, dict):
            try:
                return [str(names[k]) for k in sorted(names, key=int)], f
            except (TypeError, ValueError):
                raise AnnotationError(f, "names: keys must be class indices 0, 1, ...") from None
        if isinstance(names, list):
            return [str(n) for n in names], f
        raise AnnotationError(f, "no 'names' list of classes")
    return None, None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`mtcnn.io.read_image_rgb` returns it (EXIF
    orientation applied), from its header."""
    from PIL import Image, UnidentifiedImageError

    from mtcnn.io import exif_orientation

    try:
        with Image.open(path) as im:
            width, height = im.size
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except (OSError, UnidentifiedImageError) as e:
        raise AnnotationError(path, f"cannot read the image's size ({' '.join(str(e).split())[:120]})") from None
    if exif_orientation(head) in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def _label_file(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the image's path becomes ``labels``, the
    extension ``.txt``."""
    parts = list(image.parts)
    k = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt")


def read_yolo(
    path: PathLike,
    images_root: PathLike | None = None,
    *,
    classes: Sequence[str | int] | None = None,
    unannotated: str = "skip",
) -> list[ImageAnnotation]:
    """Read a YOLO dataset: a folder with ``images/`` and ``labels/`` (or such an ``images/``
    folder itself, e.g. ``data/images/train``), as Ultralytics, CVAT and Label Studio export it.

    Every image under ``images/`` (recursively, sorted) has its boxes in the file of the same
    relative path under ``labels/`` with the extension ``.txt``: one line per box,
    ``class cx cy w h`` with the centre, width and height normalised to 0..1 of the image
    (read from the image's header, EXIF orientation applied, as training reads the photo).
    Boxes become ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` in pixels, clipped to the image.

    ``classes``: the class names or indices that are faces (names from ``classes.txt``,
    ``obj.names`` or ``data.yaml``'s ``names`` in the dataset folder); null: every box. The
    names (or the indices, without a names file) go to ``attributes['names']``.

    ``unannotated``: an image without a label file, or whose label file holds no face box, is
    left out (``skip``, the default) or kept as a face-free photo (``negatives``). A label file
    without an image is an error (a renamed photo would otherwise lose its faces silently).
    images_root: the images folder, instead of ``<path>/images``.
    """
    from mtcnn.io import IMAGE_SUFFIXES

    path = Path(path)
    if not path.is_dir():
        problem = "not a folder: a YOLO dataset is a folder with images/ and labels/" if path.exists() else "folder not found"
        raise AnnotationError(path, problem)
    _check_unannotated(path, unannotated)
    if images_root is not None:
        images_dir = Path(images_root)
    elif (path / "images").is_dir() or "images" not in path.parts:
        images_dir = path / "images"
    else:  # the images folder itself, or a split inside it (data/images/train)
        images_dir = path
    if not images_dir.is_dir():
        raise AnnotationError(path, f"no images folder ({images_dir}): a YOLO dataset is a folder with images/ and labels/")
    if "images" not in images_dir.parts:
        raise AnnotationError(images_dir, "the images folder must be named 'images' (its labels are found by replacing it with 'labels')")
    k = len(images_dir.parts) - 1 - images_dir.parts[::-1].index("images")
    dataset_dir = Path(*images_dir.parts[:k]) if k > 0 else Path(".")
    labels_dir = _label_file(images_dir / "x").parent
    names, names_file = _yolo_class_names(dataset_dir)

    wanted: set[int] | None = None
    if classes is not None:
        wanted = set()
        for c in classes:
            key = _class_key(c)
            if names is not None and key in names:
                wanted.add(names.index(key))
            elif key.isdigit() and (names is None or int(key) < len(names)):
                wanted.add(int(key))
            else:
                known = (f"classes in {names_file.name}: " + ", ".join(f"{n} ({i})" for i, n in enumerate(names))
                         if names is not None else "no classes.txt, obj.names or data.yaml names them: give indices")
                raise AnnotationError(dataset_dir, f"classes: {key!r} is not a class of this dataset ({known})")

    image_files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    expected = {_label_file(p) for p in image_files}
    if labels_dir.is_dir():
        orphans = sorted(f for f in labels_dir.rglob("*.txt") if f not in expected)
        if orphans:
            raise AnnotationError(orphans[0], f"label file without an image (no {orphans[0].stem}.* with an image "
                                              f"extension in {images_dir}){f'; {len(orphans) - 1} more' if len(orphans) > 1 else ''}")
    records: list[ImageAnnotation] = []
    for image in image_files:
        label = _label_file(image)
        rows: list[tuple[int, float, float, float, float]] = []
        if label.is_file():
            for ln, raw in enumerate(_read_lines(label), start=1):
                tokens = raw.split()
                if not tokens:
                    continue
                if len(tokens) != 5:
                    extra = " (segment polygons and pose keypoints are not read: export boxes)" if len(tokens) > 5 else ""
                    raise AnnotationError(label, f"expected 'class cx cy w h' (5 values), got {len(tokens)}{extra}", ln)
                values = _floats(tokens, label, ln, "box")
                cls = values[0]
                if cls < 0 or not float(cls).is_integer():
                    raise AnnotationError(label, f"class {tokens[0]!r} is not a class index (0, 1, ...)", ln)
                if names is not None and int(cls) >= len(names):
                    raise AnnotationError(
                        label, f"class {int(cls)} is not in {names_file.name} ({len(names)} classes: 0..{len(names) - 1})", ln)
                cx, cy, w, h = values[1:]
                if not all(-1e-3 <= v <= 1 + 1e-3 for v in (cx, cy, w, h)):
                    raise AnnotationError(label, "cx cy w h must be normalised to 0..1 of the image (pixels given?)", ln)
                if w <= 0 or h <= 0:
                    raise AnnotationError(label, f"box has no area (w {tokens[3]}, h {tokens[4]})", ln)
                if wanted is None or int(cls) in wanted:
                    rows.append((int(cls), cx, cy, w, h))
        if not rows:
            if unannotated == "negatives":
                records.append(_record(image, np.zeros((0, 4), np.float32), attributes={"names": np.zeros(0, dtype=str)}))
            continue
        width, height = _image_size(image)
        t = np.array([r[1:] for r in rows], np.float64)
        b = np.stack([t[:, 0] - t[:, 2] / 2, t[:, 1] - t[:, 3] / 2, t[:, 0] + t[:, 2] / 2, t[:, 1] + t[:, 3] / 2], axis=1)
        b = np.clip(b, 0.0, 1.0) * np.array([width, height, width, height], np.float64)
        labels = [names[r[0]] if names is not None else str(r[0]) for r in rows]
        records.append(_record(image, b.astype(np.float32), attributes={"names": np.array(labels, dtype=str)},
                               width=width, height=height))
    return records
