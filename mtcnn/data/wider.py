"""WIDER FACE annotations (``*_bbx_gt.txt``) and the project's landmark side file: reader and
writers (conventions: :mod:`mtcnn.data.annotations`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mtcnn.atomic import atomic_write_text
from mtcnn.data.annotations import (
    WIDER_ATTRIBUTES,
    AnnotationError,
    ImageAnnotation,
    PathLike,
    _fmt,
    _int_count,
    _is_float,
    _join,
    _parse_lines,
    _parse_table,
    _read_lines,
    _record,
    _rel_to_posix,
    _relative_posix,
)


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
    names, starts, counts = _wider_blocks(lines, path)
    return _wider_records(lines, path, root, names, starts, counts, landmarks_path)


def _wider_blocks(lines: list[str], path: Path) -> tuple[list[str], list[int], list[int]]:
    """Pass 1 (pure Python over path/count lines only): image names, first face line, counts."""
    n_lines = len(lines)
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
    return names, starts, counts


def _wider_records(lines: list[str], path: Path, root: Path, names: list[str], starts: list[int],
                   counts: list[int], landmarks_path: PathLike | None) -> list[ImageAnnotation]:
    """Pass 2: the face table parsed at once, zero-face markers dropped, one record per image."""
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
    atomic_write_text(Path(path), "\n".join(out) + "\n" if out else "")


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
    atomic_write_text(Path(path), "\n".join(out) + "\n")
