"""Composite scenes: real CNN_FacePoint faces pasted onto face-free background photos.

We have no WIDER FACE images, so multi-face detection training images are composed: a
background from ``nonface_scenes`` (train: the first 80 % by file name, val: the rest) gets
1-15 faces from the CNN_FacePoint train list (val: the test list), and the faces' boxes and
five landmarks are written as a WIDER ``*_bbx_gt.txt`` plus a landmark side file, which
:func:`mtcnn.data.annotations.read_wider` reads back (``landmarks_path=``).

How one scene is made (:func:`compose_scene`), all randomness from
``default_rng([seed, split, scene index])`` so any worker count gives the same files:

* background: randomly mirrored, scaled to cover the canvas (default 640x480; ``canvas: null``
  keeps the original) times a random zoom, randomly cropped;
* face sizes: the pasted WIDER-style box width is log-uniform in ``[min_face, max_face_fraction
  * shorter canvas side]``; faces are pasted largest first (small faces stay on top);
* face choice: uniform among source faces that need at most ``max_upscale`` enlargement;
* box style: CNN_FacePoint boxes are tight (brows to chin). The recorded box is the WIDER-like
  mapping of :class:`mtcnn.config.data.WiderBoxConfig` (1.15 w x 1.35 h, extended upward to
  the forehead), the same mapping the P-Net generator applies to CNN_FacePoint photos;
* placement: uniform inside the canvas (the recorded box always lies inside it); rejected
  when the IoU with an earlier face exceeds ``max_iou`` or the new paste (out to ``mask_outer``)
  and an earlier face box overlap by more than ``max_cover`` of the smaller of the two; at most ``placement_attempts`` tries, then the face
  is left out;
* paste: the source region ``context`` x the WIDER box (clipped to the source image) is mapped
  by one exact scale + shift (area-averaged when shrinking), optionally mirrored (landmarks
  mirrored with LE<->RE, LM<->RM swapped); alpha is a smooth elliptic mask (1 inside
  ``mask_inner``, 0 beyond ``mask_outer`` in units of the box half-axes) times a ramp that
  fades to 0 at the edges of the available source region;
* colour match: in CIE Lab, the pasted pixels' lightness mean and std move toward the local
  background's by a random fraction ``color_match`` (std ratio limited to [0.7, 1.4]) and
  the a/b means by ``color_match_ab``;
* blur match: if the background was enlarged more than the face, the face is Gaussian-blurred
  to the background's estimated blur (:func:`blur_sigma`).

Layout of an output folder (``<out>``, default ``{gen}/scenes/<split>``)::

    images/000000.jpg ...       the scenes (JPEG)
    scenes_bbx_gt.txt           WIDER format, paths relative to <out>
    scenes_landmarks.txt        landmark side file (write_landmark_sidefile)
    scenes_manifest.jsonl       one JSON line per finished scene: boxes, points, background,
                                source faces (provenance; also the resume record)
    config.resolved.yaml        the settings used; preview.png with --preview

Resuming: a scene whose image and manifest line exist is not made again; the annotation files
are rewritten atomically at the end from the manifest.

Under ``torchrun`` (:mod:`mtcnn.data.shards`) rank ``r`` of ``w`` makes the scenes ``i % w == r``
into the same folder and records them in ``scenes_manifest.rankRR-of-WW.jsonl`` (its resume
record) with ``scenes_manifest.rankRR-of-WW.done`` once its share is made; when every rank is
done the records are merged into ``scenes_manifest.jsonl`` and the annotation files are written,
the same bytes one process writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from mtcnn.atomic import atomic_write_text
from mtcnn.config import save_resolved, to_dict
from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    read_cnn_facepoint,
    split_by_name,
    write_landmark_sidefile,
    write_wider,
)
from mtcnn.config.data import SceneConfig, WiderBoxConfig
from mtcnn.config.paths import data_hint, resolve_path
from mtcnn.data.generate import GenerationError, parallel_chunks
from mtcnn.data.sampling import tight_to_wider
from mtcnn.data.shards import Shard, finish
from mtcnn.ops.conventions import FLIP_POINT_ORDER
from mtcnn.ops.np_boxes import box_iou
from mtcnn.io import ImageReadError, list_images, read_image_rgb, write_image_rgb

__all__ = [
    "ANNOTATION_NAME",
    "LANDMARKS_NAME",
    "MANIFEST_NAME",
    "FacePool",
    "Scene",
    "SceneSummary",
    "compose_scene",
    "draw_preview",
    "generate_scenes",
    "list_backgrounds",
    "load_face_pool",
]

ANNOTATION_NAME = "scenes_bbx_gt.txt"
LANDMARKS_NAME = "scenes_landmarks.txt"
MANIFEST_NAME = "scenes_manifest.jsonl"
_SETTINGS_NAME = ".scenes_settings.yaml"
_SPLIT_CODE = {"train": 0, "val": 1}


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


@dataclass
class FacePool:
    """Source faces: paths, tight boxes [N,4], points [N,5,2] and WIDER-like boxes [N,4]."""

    paths: list[str]
    boxes: np.ndarray
    points: np.ndarray
    wider: np.ndarray

    def __post_init__(self) -> None:
        widths = self.wider[:, 2] - self.wider[:, 0]
        self._order = np.argsort(widths, kind="stable")
        self._sorted_widths = widths[self._order]

    def __len__(self) -> int:
        return len(self.paths)

    def pick(self, target_width: float, max_upscale: float, rng: np.random.Generator) -> int:
        """A face whose WIDER box is at least ``target_width / max_upscale`` wide (uniform among
        them); the widest 10 % when none is that wide."""
        n = len(self.paths)
        start = int(np.searchsorted(self._sorted_widths, target_width / max_upscale))
        if start >= n:
            start = min(int(0.9 * n), n - 1)
        return int(self._order[rng.integers(start, n)])


def load_face_pool(list_path: str | os.PathLike, wider_box: WiderBoxConfig) -> FacePool:
    """CNN_FacePoint faces of one list (one face per image)."""
    records = read_cnn_facepoint(list_path)
    records = [r for r in records if r.num_faces == 1 and np.isfinite(r.landmarks).all()]
    if not records:
        raise GenerationError(f"{list_path}: no faces with 5 landmarks")
    boxes = np.concatenate([r.boxes for r in records]).astype(np.float64)
    points = np.concatenate([r.landmarks for r in records]).astype(np.float64)
    return FacePool([str(r.path) for r in records], boxes, points,
                    tight_to_wider(boxes, wider_box).astype(np.float64))


def list_backgrounds(folder: str | os.PathLike, split: str, train_fraction: float = 0.8) -> list[Path]:
    """Background images of one split: sorted by file name, the first ``train_fraction`` are
    train (the data README's rule, via :func:`split_by_name`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GenerationError(f"{folder}: background folder not found{data_hint(folder)}")
    files = list_images([folder])
    empty = np.zeros((0, 4), np.float32)
    recs = [ImageAnnotation(path=f, boxes=empty, landmarks=np.zeros((0, 0, 2)), ignore=np.zeros(0, bool))
            for f in files]
    chosen = [r.path for r in split_by_name(recs, split, train_fraction)]
    if not chosen:
        raise GenerationError(f"{folder}: no {split} background images")
    return chosen


# ------------------------------------------------------------------------------------------
# composing one scene
# ------------------------------------------------------------------------------------------


@dataclass
class Scene:
    index: int
    image: np.ndarray  # uint8 [H,W,3] RGB
    boxes: np.ndarray  # float32 [M,4] WIDER-like boxes
    landmarks: np.ndarray  # float32 [M,5,2]
    background: str
    faces: list[dict[str, Any]]  # provenance: source path, flip, scale
    warnings: list[str]


def _fit_background(bg: np.ndarray, cfg: SceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The canvas cut from a background, and the scale applied to it."""
    if rng.random() < cfg.background_flip:
        bg = bg[:, ::-1]
    if cfg.canvas is None:
        return np.ascontiguousarray(bg), 1.0
    W, H = cfg.canvas
    h, w = bg.shape[:2]
    s = max(W / w, H / h) * rng.uniform(*cfg.background_zoom)
    nw, nh = max(W, math.ceil(w * s)), max(H, math.ceil(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    big = cv2.resize(np.ascontiguousarray(bg), (nw, nh), interpolation=interp)
    x0 = int(rng.integers(0, nw - W + 1))
    y0 = int(rng.integers(0, nh - H + 1))
    return np.ascontiguousarray(big[y0:y0 + H, x0:x0 + W]), float(s)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _match_colour(face: np.ndarray, bg: np.ndarray, alpha: np.ndarray, cfg: SceneConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Move the face's Lab statistics partway toward the background patch's."""
    t_l = rng.uniform(*cfg.color_match)
    t_ab = rng.uniform(*cfg.color_match_ab)
    f_lab = cv2.cvtColor(face / 255.0, cv2.COLOR_RGB2LAB)
    b_lab = cv2.cvtColor(bg / 255.0, cv2.COLOR_RGB2LAB)
    w = alpha.reshape(-1).astype(np.float64)
    if w.sum() < 1:
        return face
    f = f_lab.reshape(-1, 3).astype(np.float64)
    b = b_lab.reshape(-1, 3).astype(np.float64)
    f_mu = (f * w[:, None]).sum(0) / w.sum()
    f_sd = np.sqrt(((f - f_mu) ** 2 * w[:, None]).sum(0) / w.sum()) + 1e-6
    b_mu = b.mean(0)
    b_sd = b.std(0) + 1e-6
    out = f_lab.copy()
    ratio = float(np.clip(b_sd[0] / f_sd[0], 0.7, 1.4))
    gain = 1.0 + t_l * (ratio - 1.0)
    out[..., 0] = (f_lab[..., 0] - f_mu[0]) * gain + f_mu[0] + t_l * (b_mu[0] - f_mu[0])
    out[..., 1:] = f_lab[..., 1:] + (t_ab * (b_mu[1:] - f_mu[1:])).astype(np.float32)
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    return np.clip(cv2.cvtColor(out, cv2.COLOR_LAB2RGB) * 255.0, 0, 255)


def blur_sigma(bg_scale: float, face_scale: float, unit: float) -> float:
    """Extra Gaussian sigma that gives a pasted face the background's blur.

    Enlarging an image by ``s > 1`` spreads its sharpest edges over about ``s`` pixels, so a
    layer's blur is modelled as ``unit * max(scale, 1)``; the face gets the difference in
    quadrature when the background is the blurrier one (0 otherwise). Measuring blur on the
    pixels instead (variance of the Laplacian) confuses flat backgrounds with blurry ones.
    """
    bg = unit * max(bg_scale, 1.0)
    face = unit * max(face_scale, 1.0)
    return math.sqrt(bg * bg - face * face) if bg > face else 0.0


def _paste(canvas: np.ndarray, src: np.ndarray, src_box: np.ndarray, dst_box: np.ndarray, k: float,
           cfg: SceneConfig, rng: np.random.Generator, bg_scale: float = 1.0) -> None:
    """Paste ``src``'s region around ``src_box`` onto ``canvas`` so that ``src_box`` lands on
    ``dst_box`` (scale ``k``), with a feathered elliptic alpha, colour and blur matching."""
    H, W = canvas.shape[:2]
    Hs, Ws = src.shape[:2]
    scx, scy = (src_box[0] + src_box[2]) / 2, (src_box[1] + src_box[3]) / 2
    hw = (src_box[2] - src_box[0]) * cfg.context / 2
    hh = (src_box[3] - src_box[1]) * cfg.context / 2
    sx1, sy1 = max(0, math.floor(scx - hw)), max(0, math.floor(scy - hh))
    sx2, sy2 = min(Ws, math.ceil(scx + hw)), min(Hs, math.ceil(scy + hh))
    if sx2 - sx1 < 2 or sy2 - sy1 < 2:
        return
    # Continuous canvas position of the source region, then the integer canvas patch.
    dx1 = (sx1 - src_box[0]) * k + dst_box[0]
    dx2 = (sx2 - src_box[0]) * k + dst_box[0]
    dy1 = (sy1 - src_box[1]) * k + dst_box[1]
    dy2 = (sy2 - src_box[1]) * k + dst_box[1]
    px1, py1 = max(0, math.floor(dx1)), max(0, math.floor(dy1))
    px2, py2 = min(W, math.ceil(dx2)), min(H, math.ceil(dy2))
    pw, ph = px2 - px1, py2 - py1
    if pw < 2 or ph < 2:
        return
    region = src[sy1:sy2, sx1:sx2]
    nw = max(1, round((sx2 - sx1) * k))
    nh = max(1, round((sy2 - sy1) * k))
    small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    ax, ay = nw / (sx2 - sx1), nh / (sy2 - sy1)
    a_x, a_y = k / ax, k / ay  # residual scale, about 1
    t_x = (sx1 - src_box[0]) * k + dst_box[0] - px1
    t_y = (sy1 - src_box[1]) * k + dst_box[1] - py1
    # Continuous (pixel-corner) affine -> OpenCV's pixel-centre convention.
    m = np.array([[a_x, 0.0, t_x + 0.5 * a_x - 0.5], [0.0, a_y, t_y + 0.5 * a_y - 0.5]])
    face = cv2.warpAffine(small, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    face = face.astype(np.float32)

    xs = px1 + np.arange(pw, dtype=np.float64) + 0.5
    ys = py1 + np.arange(ph, dtype=np.float64) + 0.5
    ecx, ecy = (dst_box[0] + dst_box[2]) / 2, (dst_box[1] + dst_box[3]) / 2
    a = (dst_box[2] - dst_box[0]) / 2
    b = (dst_box[3] - dst_box[1]) / 2
    d = np.sqrt(((xs[None, :] - ecx) / a) ** 2 + ((ys[:, None] - ecy) / b) ** 2)
    alpha = _smoothstep((cfg.mask_outer - d) / max(cfg.mask_outer - cfg.mask_inner, 1e-6))
    feather = max(1.0, 0.1 * (dst_box[2] - dst_box[0]))
    edge_x = np.minimum(xs - dx1, dx2 - xs)
    edge_y = np.minimum(ys - dy1, dy2 - ys)
    alpha = alpha * _smoothstep(edge_x[None, :] / feather) * _smoothstep(edge_y[:, None] / feather)
    alpha = alpha.astype(np.float32)

    bg = canvas[py1:py2, px1:px2].astype(np.float32)
    face = _match_colour(face, bg, alpha, cfg, rng)
    sigma = blur_sigma(bg_scale, k, cfg.blur_unit) if cfg.blur_match else 0.0
    if sigma >= 0.3:
        face = cv2.GaussianBlur(face, (0, 0), sigma)
    out = alpha[..., None] * face + (1.0 - alpha[..., None]) * bg
    canvas[py1:py2, px1:px2] = np.clip(np.rint(out), 0, 255).astype(np.uint8)


def compose_scene(index: int, cfg: SceneConfig, split: str, backgrounds: list[Path], pool: FacePool) -> Scene:
    """Make scene ``index`` of ``split`` (deterministic in ``(cfg.seed, split, index)``).

    Raises :class:`mtcnn.io.ImageReadError` when the chosen background cannot be read; an
    unreadable face image is left out (listed in ``warnings``).
    """
    rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index])
    bg_path = backgrounds[int(rng.integers(len(backgrounds)))]
    canvas, bg_scale = _fit_background(read_image_rgb(bg_path), cfg, rng)
    canvas = canvas.copy()
    H, W = canvas.shape[:2]
    lo, hi = cfg.faces_per_scene
    n = int(rng.integers(min(lo, hi), max(lo, hi) + 1))
    max_w = cfg.max_face_fraction * min(H, W)
    min_w = min(cfg.min_face, max_w)
    widths = np.sort(np.exp(rng.uniform(math.log(min_w), math.log(max_w), n)))[::-1]

    boxes: list[np.ndarray] = []
    points: list[np.ndarray] = []
    faces: list[dict[str, Any]] = []
    warnings: list[str] = []
    cache: dict[int, np.ndarray] = {}
    for target_w in widths.tolist():
        j = pool.pick(target_w, cfg.max_upscale, rng)
        flip = bool(rng.random() < cfg.flip_prob)
        if j not in cache:
            try:
                cache[j] = read_image_rgb(pool.paths[j])
            except ImageReadError as e:
                warnings.append(str(e))
                continue
        src = cache[j]
        src_box = pool.wider[j].copy()
        pts = pool.points[j].copy()
        if flip:
            Ws = src.shape[1]
            src = src[:, ::-1]
            src_box = np.array([Ws - src_box[2], src_box[1], Ws - src_box[0], src_box[3]])
            pts[:, 0] = Ws - pts[:, 0]
            pts = pts[list(FLIP_POINT_ORDER)]
        k = target_w / (src_box[2] - src_box[0])
        bw, bh = target_w, (src_box[3] - src_box[1]) * k
        if bw >= W or bh >= H:
            continue
        placed = None
        for _ in range(cfg.placement_attempts):
            x1 = rng.uniform(0, W - bw)
            y1 = rng.uniform(0, H - bh)
            cand = np.array([x1, y1, x1 + bw, y1 + bh])
            if boxes and not _placement_ok(cand, np.stack(boxes), cfg):
                continue
            placed = cand
            break
        if placed is None:
            continue
        _paste(canvas, src, src_box, placed, k, cfg, rng, bg_scale)
        boxes.append(placed)
        points.append((pts - src_box[None, :2]) * k + placed[None, :2])
        faces.append({"path": pool.paths[j], "flip": flip, "scale": round(float(k), 5)})
    b = np.array(boxes, np.float32).reshape(-1, 4)
    p = np.array(points, np.float32).reshape(-1, 5, 2)
    return Scene(index, canvas, b, p, str(bg_path), faces, warnings)


def _placement_ok(cand: np.ndarray, earlier: np.ndarray, cfg: SceneConfig) -> bool:
    if box_iou(cand[None], earlier).max() > cfg.max_iou:
        return False
    # The new paste is opaque out to mask_outer x its half-axes: it may hide earlier faces.
    cx, cy = (cand[0] + cand[2]) / 2, (cand[1] + cand[3]) / 2
    hw, hh = (cand[2] - cand[0]) / 2 * cfg.mask_outer, (cand[3] - cand[1]) / 2 * cfg.mask_outer
    cover = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
    lt = np.maximum(cover[:2], earlier[:, :2])
    rb = np.minimum(cover[2:], earlier[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = (earlier[:, 2] - earlier[:, 0]) * (earlier[:, 3] - earlier[:, 1])
    # Relative to the smaller of the two: a small face pasted onto a big one's eye is rejected.
    smaller = np.minimum(area, (cover[2] - cover[0]) * (cover[3] - cover[1]))
    return bool((inter <= cfg.max_cover * smaller).all())


# ------------------------------------------------------------------------------------------
# the job
# ------------------------------------------------------------------------------------------


class _SceneTask:
    """Picklable: make, write and describe one scene (runs in a worker)."""

    def __init__(self, cfg: SceneConfig, split: str, out_dir: Path, backgrounds: list[Path], pool: FacePool):
        self.cfg, self.split, self.out_dir, self.backgrounds, self.pool = cfg, split, out_dir, backgrounds, pool

    def __call__(self, index: int) -> dict[str, Any]:
        try:
            scene = compose_scene(index, self.cfg, self.split, self.backgrounds, self.pool)
        except ImageReadError as e:
            return {"index": index, "error": str(e)}
        rel = f"images/{index:06d}.jpg"
        write_image_rgb(self.out_dir / rel, scene.image, quality=self.cfg.jpeg_quality)
        return {
            "index": index,
            "file": rel,
            "width": int(scene.image.shape[1]),
            "height": int(scene.image.shape[0]),
            "boxes": scene.boxes.tolist(),
            "landmarks": scene.landmarks.reshape(-1, 10).tolist(),
            "background": scene.background,
            "faces": scene.faces,
            "warnings": scene.warnings,
        }


@dataclass
class SceneSummary:
    out_dir: Path
    annotation: Path
    landmarks: Path
    scenes: int
    faces: int
    made: int
    resumed: int
    failed: list[str]
    seconds: float
    preview: Path | None = None
    shard: Shard = field(default_factory=Shard)
    complete: bool = True  # False: a rank whose share is done while others still run (no annotation files yet)

    def lines(self) -> list[str]:
        rate = self.made / self.seconds if self.seconds > 0 else float("inf")
        who = f"{self.shard}: " if self.shard.enabled else ""
        if not self.complete:
            who2 = "rank 0 writes" if self.shard.launched else "the last rank to finish writes"
            return [f"{who}{self.made:,} scenes made now, {self.resumed:,} done before, {len(self.failed):,} failed; "
                    f"{rate:.1f} scenes/s",
                    f"{who2} {self.annotation.name} and {self.landmarks.name} once every rank has finished"]
        return [
            f"{who}scenes: {self.scenes:,} ({self.made:,} made now, {self.resumed:,} done before, "
            f"{len(self.failed):,} failed), faces: {self.faces:,}; {rate:.1f} scenes/s",
            f"wrote {self.annotation} and {self.landmarks.name}" + (f"; preview {self.preview}" if self.preview else ""),
        ]


def _content_settings(cfg: SceneConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    for key in ("workers", "num_scenes", "num_train", "num_val", "out", "preview_scenes"):
        d.pop(key, None)
    return d


def _check_settings(out_dir: Path, cfg: SceneConfig) -> None:
    path = out_dir / _SETTINGS_NAME
    now = _content_settings(cfg)
    if path.is_file():
        before = yaml.safe_load(path.read_text()) or {}
        if before != now:
            diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise GenerationError(
                f"{out_dir} holds scenes made with other settings ({', '.join(diff)} differ); "
                "use another --out or delete that folder"
            )
    else:  # atomic: ranks of a split job start together and read what the first one wrote
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(now, sort_keys=True))


def _read_manifest(path: Path, out_dir: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: that scene is made again
        if "file" in entry and (out_dir / entry["file"]).is_file():
            done[int(entry["index"])] = entry
    return done


def _record(entry: dict[str, Any], out_dir: Path) -> ImageAnnotation:
    m = len(entry["boxes"])
    return ImageAnnotation(
        path=out_dir / entry["file"],
        boxes=np.array(entry["boxes"], np.float32).reshape(m, 4),
        landmarks=np.array(entry["landmarks"], np.float32).reshape(m, 5, 2),
        ignore=np.zeros(m, bool),
        width=entry["width"],
        height=entry["height"],
    )


def generate_scenes(cfg: SceneConfig, *, preview: bool = False, progress: bool = True,
                    shard: Shard | None = None) -> SceneSummary:
    """Make ``cfg.scenes_for_split()`` scenes of ``cfg.split`` into the output folder.

    ``shard`` (default: from the torchrun environment): a rank of a split job makes the scenes
    ``i`` with ``i % world_size == rank`` into the same folder, recording them in its own
    ``scenes_manifest.rankRR-of-WW.jsonl`` and, when its share is done, a ``.done`` marker beside
    it; when every rank is done the manifests are merged in index order and the annotation files
    written, byte for byte what one process writes (:mod:`mtcnn.data.shards`)."""
    shard = Shard.from_env() if shard is None else shard
    split = cfg.split
    out_dir = resolve_path(cfg.out, split)
    n = cfg.scenes_for_split()
    faces_list = resolve_path(cfg.faces_train if split == "train" else cfg.faces_val)
    try:
        pool = load_face_pool(faces_list, cfg.wider_box)
    except AnnotationError as e:
        raise GenerationError(str(e)) from None
    backgrounds = list_backgrounds(resolve_path(cfg.backgrounds), split, cfg.background_train_fraction)
    _check_settings(out_dir, cfg)
    save_resolved(cfg, out_dir)
    manifest = out_dir / MANIFEST_NAME
    done = _read_manifest(manifest, out_dir)
    record_to = manifest
    if shard.enabled:
        record_to = shard.path(manifest)
        _done_marker(record_to).unlink(missing_ok=True)
        done.update(_read_manifest(record_to, out_dir))
    mine = [i for i in range(n) if shard.owns(i)]
    todo = [i for i in mine if i not in done]
    resumed = len(mine) - len(todo)
    chunks = [todo[i:i + 4] for i in range(0, len(todo), 4)]
    task = _SceneTask(cfg, split, out_dir, backgrounds, pool)
    failed: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"scenes {split}" + (f" rank {shard.rank}/{shard.world_size}" if shard.enabled else "")
        bar = tqdm(total=len(mine), initial=resumed, desc=desc, unit="scene", mininterval=1.0,
                   file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    made = 0
    try:
        with open(record_to, "a", encoding="utf-8") as mf:
            for results in parallel_chunks(task, chunks, cfg.workers):
                for r in results:
                    if "error" in r:
                        failed.append(r["error"])
                        msg = f"scene {r['index']} skipped: unreadable background: {r['error']}"
                        (bar.write(msg, file=sys.stderr) if bar else print(msg, file=sys.stderr))
                        continue
                    for w in r.get("warnings", []):
                        msg = f"scene {r['index']}: face left out: {w}"
                        (bar.write(msg, file=sys.stderr) if bar else print(msg, file=sys.stderr))
                    mf.write(json.dumps(r) + "\n")
                    done[r["index"]] = r
                    made += 1
                mf.flush()
                if bar is not None:
                    bar.update(len(results))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if todo and made == 0:
        raise GenerationError(f"no scene could be made ({failed[0] if failed else 'unknown error'})")
    annotation = out_dir / ANNOTATION_NAME
    landmarks = out_dir / LANDMARKS_NAME
    if shard.enabled:
        atomic_write_text(_done_marker(record_to), json.dumps({"scenes": n, "rank": shard.rank}))
        merged = finish(shard, lambda: _merge_shards(out_dir, n, shard), "the scene manifests")
        if merged is None:
            return SceneSummary(out_dir, annotation, landmarks, len(mine), 0, made, resumed, failed, seconds,
                                shard=shard, complete=False)
        done = merged
    else:
        # The manifest is rewritten in index order (atomic), dropping duplicates and cut lines.
        _atomic_text(manifest, "".join(json.dumps(e) + "\n" for e in sorted(done.values(), key=lambda e: e["index"])))
    entries = [done[i] for i in sorted(done) if i < n]
    records = [_record(e, out_dir) for e in entries]
    write_wider(annotation, records, out_dir)
    write_landmark_sidefile(landmarks, records, out_dir)
    summary = SceneSummary(out_dir, annotation, landmarks, len(records), sum(r.num_faces for r in records),
                           made, resumed, failed, seconds, shard=shard)
    if preview and records and shard.rank == 0:
        summary.preview = out_dir / "preview.png"
        write_image_rgb(summary.preview, draw_preview(records[: cfg.preview_scenes]))
    return summary


def _done_marker(part: Path) -> Path:
    """``scenes_manifest.rank00-of02.jsonl`` -> ``scenes_manifest.rank00-of02.done``: that rank's share is made."""
    return part.with_suffix(".done")


def _merge_shards(out_dir: Path, n: int, shard: Shard) -> dict[int, dict[str, Any]] | None:
    """Every scene made so far (the main manifest and every rank's), once every rank's share of
    ``n`` scenes is done (None before); the main manifest is rewritten with them in index order.
    Idempotent (ranks that finish together may both call it)."""
    manifest = out_dir / MANIFEST_NAME
    parts = shard.paths(manifest)
    for part in parts:
        try:
            marker = json.loads(_done_marker(part).read_text())
        except (OSError, ValueError):
            return None
        if marker.get("scenes") != n:
            return None
    done = _read_manifest(manifest, out_dir)
    for part in parts:
        done.update(_read_manifest(part, out_dir))
    atomic_write_text(manifest, "".join(json.dumps(e) + "\n" for e in sorted(done.values(), key=lambda e: e["index"])))
    return done


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_POINT_COLOURS = [(255, 64, 64), (64, 160, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]


def draw_preview(records: list[ImageAnnotation], columns: int = 3, tile_width: int = 640) -> np.ndarray:
    """A mosaic of scenes with their boxes (green) and landmarks (LE red, RE blue, N yellow,
    LM magenta, RM cyan) drawn, RGB uint8."""
    tiles = []
    for rec in records:
        img = read_image_rgb(rec.path).copy()
        s = tile_width / img.shape[1]
        img = cv2.resize(img, (tile_width, max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
        for box, pts in zip(rec.boxes * s, rec.landmarks * s):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 0), 1, cv2.LINE_AA)
            for (x, y), colour in zip(pts, _POINT_COLOURS):
                if np.isfinite(x) and np.isfinite(y):
                    cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
        tiles.append(img)
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)
