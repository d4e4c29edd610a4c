"""Readers of the other annotation formats: CNN_FacePoint, FDDB, dlib XML, PASCAL VOC, 68-point CSV
and the project's box list (conventions: :mod:`mtcnn.data.annotations`)."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    PathLike,
    _check_file,
    _int_count,
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
