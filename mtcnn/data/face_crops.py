"""Face crops held in memory for landmark regression (the 5-point MobileNet-V2 cascade, 68 points).

Every face gets a square *reference box* (the frame its points are expressed in) and is stored
once as a uint8 crop of ``context`` times that box, so that training can rotate, scale, shift and
flip it (:mod:`mtcnn.data.keypoint_aug`) without reading the image again.

Coordinates. The *reference frame* maps the reference box onto ``[-1, 1]²``: a point ``p`` in
image pixels has ``r = 2 (p − centre) / side``. The stored crop covers ``[-context, context]²``
of that frame. Image pixels follow :func:`mtcnn.ops.crops.crop_resize` (the detector's cropper),
so a model trained here and run on crops made the same way at test time predicts in the
annotations' own pixel convention.

Reference boxes: ``"points"`` — the square around the points' extent, its side the larger
extent times ``1 + expand`` (68 points: the seed's "crop expanded 10 %"); ``"box"`` — the square
with the annotated box's centre and its larger side times ``1 + expand`` (CNN_FacePoint's tight
face boxes; also a detector's boxes at test time).

Crops are cached in a folder: a dataset's by its list file (:func:`cached_crops`), a configured
annotation source's (the 300-W ``.pts`` folders) by its entry and its files' names and sizes
(:func:`cached_source_crops`); :meth:`FaceCrops.concat` joins crops of the same framing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from mtcnn.data.annotations import ImageAnnotation, read_68pt_csv, read_cnn_facepoint
from mtcnn.io import read_image_rgb
from mtcnn.ops.crops import crop_resize
from mtcnn.ops.np_boxes import square_boxes

ReferenceKind = Literal["points", "box"]
#: the 68-point data's splits: (list file, images folder) under ``<data>/udacity68``
UDACITY68_SPLITS = {"train": ("training_frames_keypoints.csv", "training"), "test": ("test_frames_keypoints.csv", "test")}
CNN_FACEPOINT_SPLITS = {"train": "trainImageList.txt", "test": "testImageList.txt"}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def points_extent(points: np.ndarray) -> np.ndarray:
    """The tight boxes [N, 4] of point sets [N, K, 2]."""
    p = np.asarray(points, np.float64)
    return np.concatenate([p.min(axis=1), p.max(axis=1)], axis=1).astype(np.float32)


def to_reference(points: np.ndarray, ref_boxes: np.ndarray) -> np.ndarray:
    """Image-pixel points [N, K, 2] → the reference frame of square boxes [N, 4]."""
    b = np.asarray(ref_boxes, np.float64)
    centre = (b[:, None, :2] + b[:, None, 2:]) / 2
    side = (b[:, 2] - b[:, 0])[:, None, None]
    return (2.0 * (np.asarray(points, np.float64) - centre) / side).astype(np.float32)


def from_reference(points: np.ndarray | torch.Tensor, ref_boxes: np.ndarray | torch.Tensor):
    """Reference-frame points [N, K, 2] → image pixels (numpy or torch, as given)."""
    b = ref_boxes
    centre = (b[:, None, :2] + b[:, None, 2:]) / 2
    side = (b[:, 2] - b[:, 0])[:, None, None]
    return centre + points * side / 2


@dataclass
class FaceCrops:
    """Faces cut out once and kept in memory.

    images: uint8 [N, C, S, S] (C 3 = RGB, 1 = grey), each the square ``[-context, context]²`` of
    its reference frame; points: float32 [N, K, 2] in the reference frame; ref_boxes: float32
    [N, 4] reference squares in image pixels; paths: the N image files.
    """

    images: torch.Tensor
    points: torch.Tensor
    ref_boxes: np.ndarray
    paths: list[str]
    context: float

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_landmarks(self) -> int:
        return int(self.points.shape[1])

    def subset(self, index: Sequence[int] | np.ndarray) -> "FaceCrops":
        idx = np.asarray(index, np.int64)
        t = torch.from_numpy(idx)
        return FaceCrops(self.images[t], self.points[t], self.ref_boxes[idx], [self.paths[i] for i in idx], self.context)

    @classmethod
    def concat(cls, parts: Sequence["FaceCrops"]) -> "FaceCrops":
        """The faces of ``parts`` one after the other; every part must have the same crop size,
        channels, context and point count (the same framing, so one loader can warp them all)."""
        parts = list(parts)
        if not parts:
            raise ValueError("no face crops to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if tuple(p.images.shape[1:]) != tuple(first.images.shape[1:]) or p.context != first.context:
                raise ValueError(f"face crops of {tuple(p.images.shape[1:])} px, context {p.context} cannot join crops of "
                                 f"{tuple(first.images.shape[1:])} px, context {first.context}")
            if p.num_landmarks != first.num_landmarks:
                raise ValueError(f"face crops with {p.num_landmarks} points cannot join crops with {first.num_landmarks}")
        if len(parts) == 1:
            return first
        return cls(torch.cat([p.images for p in parts]), torch.cat([p.points for p in parts]),
                   np.concatenate([p.ref_boxes for p in parts]), [q for p in parts for q in p.paths], first.context)

    def image_points(self, ref_points: np.ndarray) -> np.ndarray:
        """Reference-frame predictions [N, K, 2] of these faces → image pixels."""
        return from_reference(np.asarray(ref_points, np.float64), self.ref_boxes.astype(np.float64))


def reference_boxes(record: ImageAnnotation, kind: ReferenceKind, expand: float) -> np.ndarray:
    tight = points_extent(record.landmarks) if kind == "points" else record.boxes
    return square_boxes(tight, expand).astype(np.float32)


def crop_faces(
    records: Sequence[ImageAnnotation], size: int, context: float, reference: ReferenceKind = "points",
    expand: float = 0.1, grey: bool = False,
) -> FaceCrops:
    """Read each image once and cut ``size``² crops of ``context`` × every face's reference box."""
    if context < 1.0:
        raise ValueError(f"context must be >= 1 (the crop holds the whole reference box), got {context}")
    images, points, refs, paths = [], [], [], []
    for rec in records:
        if rec.num_faces == 0:
            continue
        if not np.isfinite(rec.landmarks).all() or rec.num_landmarks == 0:
            raise ValueError(f"{rec.path}: every face needs all its landmarks for landmark training")
        ref = reference_boxes(rec, reference, expand)
        outer = square_boxes(ref, context - 1.0).astype(np.float32)
        rgb = torch.from_numpy(read_image_rgb(rec.path)).permute(2, 0, 1)
        crops = crop_resize([rgb], torch.from_numpy(outer), torch.zeros(len(ref), dtype=torch.long), size)
        crops = crops.round().clamp(0, 255)
        if grey:
            crops = (crops * torch.from_numpy(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True).round()
        images.append(crops.to(torch.uint8))
        points.append(to_reference(rec.landmarks, ref))
        refs.append(ref)
        paths += [str(rec.path)] * len(ref)
    if not images:
        raise ValueError("no annotated faces to crop")
    return FaceCrops(
        torch.cat(images), torch.from_numpy(np.concatenate(points)), np.concatenate(refs), paths, float(context)
    )


def _cache_key(list_file: Path, **settings) -> str:
    h = hashlib.sha256(list_file.read_bytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


def cached_crops(list_file: Path, records_fn, cache_dir: str | os.PathLike | None, **settings) -> FaceCrops:
    """:func:`crop_faces` of ``records_fn()``, kept in ``cache_dir`` keyed by the list file and settings."""
    path = Path(cache_dir) / f"{list_file.stem}_{_cache_key(list_file, **settings)}.pt" if cache_dir is not None else None
    return _crops_cached_at(path, records_fn, settings)


def files_fingerprint(path: str | os.PathLike) -> str:
    """A short hash of an annotation source's files: for a folder (a 300-W ``.pts`` folder) the
    sorted names and sizes of the files in it (annotations and images, so a face or image added,
    removed or rewritten with another size changes it); for one file, its bytes."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.iterdir() if q.is_file()):
            h.update(f"{f.name}\t{f.stat().st_size}\n".encode())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_source_crops(name: str, key: str, records_fn, cache_dir: str | os.PathLike | None, **settings) -> FaceCrops:
    """:func:`crop_faces` of ``records_fn()`` for a configured annotation source, kept in ``cache_dir``
    as ``source_<name>_<hash>.pt``; ``key`` is a stable text of everything that selects the source's faces
    (its entry, resolved path and :func:`files_fingerprint`), hashed with the crop settings."""
    path = None
    if cache_dir is not None:
        h = hashlib.sha256(key.encode())
        h.update(repr(sorted(settings.items())).encode())
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "source"
        path = Path(cache_dir) / f"source_{safe}_{h.hexdigest()[:16]}.pt"
    return _crops_cached_at(path, records_fn, settings)


def _crops_cached_at(path: Path | None, records_fn, settings: dict) -> FaceCrops:
    if path is not None and path.exists():
        blob = torch.load(path, weights_only=False)
        return FaceCrops(blob["images"], blob["points"], blob["ref_boxes"], blob["paths"], blob["context"])
    crops = crop_faces(records_fn(), **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(
            {"images": crops.images, "points": crops.points, "ref_boxes": crops.ref_boxes, "paths": crops.paths,
             "context": crops.context}, tmp,
        )  # fmt: skip
        os.replace(tmp, path)
    return crops


def udacity68_crops(data_root: str | os.PathLike, split: str, size: int, context: float = 1.6, expand: float = 0.1,
                    grey: bool = False, cache_dir: str | os.PathLike | None = None, limit: int | None = None) -> FaceCrops:
    """udacity68 ``train`` / ``test`` faces: reference = the 68 points' extent expanded by ``expand``."""
    if split not in UDACITY68_SPLITS:
        raise ValueError(f"udacity68 split must be one of {list(UDACITY68_SPLITS)}, not {split!r}")
    csv_name, folder = UDACITY68_SPLITS[split]
    root = Path(data_root) / "udacity68"
    list_file = root / csv_name
    if not list_file.exists():
        raise FileNotFoundError(f"{list_file}: udacity68 {split} list not found (set MTCNN_DATA)")

    def records():
        recs = read_68pt_csv(list_file, root / folder)
        return recs[:limit] if limit else recs

    return cached_crops(list_file, records, cache_dir, size=size, context=context, reference="points", expand=expand,
                        grey=grey) if not limit else crop_faces(records(), size, context, "points", expand, grey)


def cnn_facepoint_crops(data_root: str | os.PathLike, split: str, size: int, context: float = 1.6,
                        expand: float = 0.0, cache_dir: str | os.PathLike | None = None,
                        limit: int | None = None) -> FaceCrops:
    """CNN_FacePoint ``train`` / ``test`` faces: reference = the annotated box made square."""
    if split not in CNN_FACEPOINT_SPLITS:
        raise ValueError(f"CNN_FacePoint split must be one of {list(CNN_FACEPOINT_SPLITS)}, not {split!r}")
    list_file = Path(data_root) / "cnn_facepoint" / CNN_FACEPOINT_SPLITS[split]
    if not list_file.exists():
        raise FileNotFoundError(f"{list_file}: CNN_FacePoint {split} list not found (set MTCNN_DATA)")

    def records():
        recs = read_cnn_facepoint(list_file)
        return recs[:limit] if limit else recs

    if limit:
        return crop_faces(records(), size, context, "box", expand)
    return cached_crops(list_file, records, cache_dir, size=size, context=context, reference="box", expand=expand,
                        grey=False)
