"""Five-point faces held in memory as grey face canvases for the landmark cascade (CNN_FacePoint's
lists, and any annotation source reduced to five points: :func:`load_facepoint_records`).

Each face becomes one ``S×S`` grey uint8 *canvas*: a square around the face box (``margin`` of the
box's larger side added on every side) resampled with the detector's area-averaging crop
(:func:`~mtcnn.ops.crops.crop_resize`), with its box and five points mapped into canvas pixels.
10,000 faces at the default 144×144 take 207 MB, so every epoch can cut fresh jittered crops out of
one tensor with one batched call instead of storing shifted copies on disk.

Built once from the image files (about a minute for the 10,000 training faces) and optionally
cached as an ``.npz`` keyed by the list file's hash and the canvas settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtcnn.atomic import atomic_path
from mtcnn.data.annotations import ImageAnnotation, read_cnn_facepoint
from mtcnn.io import ImageReadError, file_sha256, read_image_rgb
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.landmark_crops import to_grey

CANVAS_SIZE = 144
CANVAS_MARGIN = 0.4


@dataclass(frozen=True)
class FacePointSet:
    """Faces in memory: canvases uint8 ``[N, S, S]``, boxes ``[N, 4]`` and points ``[N, 5, 2]`` in
    canvas pixels (float32), the image each face came from, and the canvas-to-image map
    ``image = canvas_origin + canvas / canvas_scale``."""

    canvases: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    paths: tuple[str, ...]
    canvas_origin: torch.Tensor
    canvas_scale: torch.Tensor

    def __len__(self) -> int:
        return int(self.canvases.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray) -> "FacePointSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return FacePointSet(
            self.canvases[index], self.boxes[index], self.points[index],
            tuple(self.paths[i] for i in index.tolist()), self.canvas_origin[index], self.canvas_scale[index],
        )  # fmt: skip

    @staticmethod
    def concat(sets: "list[FacePointSet]") -> "FacePointSet":
        """The faces of ``sets`` in order, as one set (canvases must share their size)."""
        if len(sets) == 1:
            return sets[0]
        return FacePointSet(
            torch.cat([s.canvases for s in sets]), torch.cat([s.boxes for s in sets]), torch.cat([s.points for s in sets]),
            tuple(p for s in sets for p in s.paths), torch.cat([s.canvas_origin for s in sets]),
            torch.cat([s.canvas_scale for s in sets]),
        )  # fmt: skip

    def split_holdout(self, every: int = 20) -> tuple["FacePointSet", "FacePointSet"]:
        """(train, held-out): every ``every``-th face is held out to watch training, never to tune on the test list."""
        idx = torch.arange(len(self))
        held = idx % every == every - 1
        return self.subset(idx[~held]), self.subset(idx[held])


def canvas_regions(boxes: torch.Tensor, margin: float = CANVAS_MARGIN) -> torch.Tensor:
    """Square canvas regions ``[N, 4]`` around face boxes: centred, side ``(1 + 2·margin)·max(w, h)``."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + 2 * margin)
    half = side[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def build_canvases(
    images: list[torch.Tensor], boxes: torch.Tensor, points: torch.Tensor, size: int = CANVAS_SIZE, margin: float = CANVAS_MARGIN
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One face per grey image ``[1, H, W]``: returns canvases ``[N, S, S]`` uint8, boxes and points
    in canvas pixels, canvas origins ``[N, 2]`` and scales ``[N]`` (canvas px per image px)."""
    regions = canvas_regions(boxes, margin)
    crops = crop_resize(images, regions, torch.arange(len(images)), size)
    canvases = crops[:, 0].round().clamp(0, 255).to(torch.uint8)
    origin = regions[:, 0:2]
    scale = size / (regions[:, 2] - regions[:, 0])
    canvas_boxes = (boxes.reshape(-1, 2, 2) - origin[:, None]) * scale[:, None, None]
    canvas_points = (points - origin[:, None]) * scale[:, None, None]
    return canvases, canvas_boxes.reshape(-1, 4), canvas_points, origin, scale


def _read_grey(record: ImageAnnotation) -> torch.Tensor:
    return to_grey(torch.from_numpy(read_image_rgb(record.path)).permute(2, 0, 1))


def load_facepoint_set(
    list_file: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    *,
    size: int = CANVAS_SIZE,
    margin: float = CANVAS_MARGIN,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    progress: bool = True,
    chunk: int = 256,
) -> FacePointSet:
    """Read a CNN_FacePoint list and its images into a :class:`FacePointSet` (cached when asked).

    A missing or unreadable image raises :class:`~mtcnn.io.ImageReadError` naming the file: the
    lists are the benchmark's split, so silently dropping faces would change it.
    """
    list_file = Path(list_file)
    records = read_cnn_facepoint(list_file, images_root)
    if limit is not None:
        records = records[:limit]
    key = {"list": file_sha256(list_file), "root": str(images_root), "n": len(records)}
    return load_facepoint_records(records, list_file.stem, key, size=size, margin=margin, cache_dir=cache_dir,
                                  progress=progress, chunk=chunk, empty_error=list_file)


def load_facepoint_records(
    records: list[ImageAnnotation],
    name: str,
    key: dict,
    *,
    size: int = CANVAS_SIZE,
    margin: float = CANVAS_MARGIN,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunk: int = 256,
    empty_error: str | os.PathLike | None = None,
) -> FacePointSet:
    """The faces of ``records`` with five finite points (ignored faces and faces with a missing
    point are left out; an image may hold several faces) as a :class:`FacePointSet`, cached as
    ``facepoints_<name>_<hash>.npz`` under ``cache_dir`` when given; ``key`` (JSON-able) names
    what the records were read from, so a changed source makes a new cache file."""
    key = json.dumps({**key, "records": len(records), "size": size, "margin": margin}, sort_keys=True)
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"facepoints_{name}_{digest}.npz"
        if cache.is_file():
            return _from_npz(cache)
    usable = []
    for r in records:
        if r.num_faces == 0 or r.num_landmarks != 5:
            continue
        ok = np.isfinite(r.landmarks).all(axis=(1, 2)) & ~np.asarray(r.ignore, bool)
        if ok.any():
            usable.append((r, ok))
    parts, paths = [], []
    for start in range(0, len(usable), chunk):
        batch = usable[start : start + chunk]
        images, boxes, points = [], [], []
        for r, ok in batch:
            grey = _read_grey(r)
            for j in np.flatnonzero(ok):
                images.append(grey)
                boxes.append(r.boxes[j])
                points.append(r.landmarks[j])
                paths.append(str(r.path))
        boxes_t = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
        points_t = torch.from_numpy(np.asarray(points, np.float32).reshape(-1, 5, 2))
        parts.append(build_canvases(images, boxes_t, points_t, size, margin))
        if progress:
            print(f"\rfaces of {min(start + chunk, len(usable))}/{len(usable)} images from {name}", end="", file=sys.stderr, flush=True)
    if progress and usable:
        print(file=sys.stderr)
    if not parts:
        raise ImageReadError(empty_error or name, "no face with five finite points (a 68-point source needs points: five)")
    canvases, boxes, points, origin, scale = (torch.cat(t) for t in zip(*parts))
    data = FacePointSet(canvases, boxes, points, tuple(paths), origin, scale)
    if cache is not None:
        _to_npz(data, cache)
    return data


def _to_npz(data: FacePointSet, path: Path) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp, canvases=data.canvases.numpy(), boxes=data.boxes.numpy(), points=data.points.numpy(),
            paths=np.array(data.paths), canvas_origin=data.canvas_origin.numpy(), canvas_scale=data.canvas_scale.numpy(),
        )  # fmt: skip


def _from_npz(path: Path) -> FacePointSet:
    with np.load(path) as z:
        return FacePointSet(
            torch.from_numpy(z["canvases"]), torch.from_numpy(z["boxes"]), torch.from_numpy(z["points"]),
            tuple(str(p) for p in z["paths"]), torch.from_numpy(z["canvas_origin"]), torch.from_numpy(z["canvas_scale"]),
        )  # fmt: skip
