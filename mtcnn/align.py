"""Aligned face crops: a 5-point similarity transform onto a face-recognition template.

The standard template is the 112×112 one used by ArcFace-style recognisers (the 96×112 one
with 8 pixels more on each side). Points are in this library's landmark order (left eye, right
eye, nose, left mouth corner, right mouth corner, "left" = the image's left) and in its
continuous pixel coordinates: pixel ``k`` spans ``[k, k+1)``, so its centre is at ``k + 0.5``;
a template point at ``(38.29, 51.70)`` lies in the crop at those coordinates.

Other sizes: the template's face region (the 96×112 box of the 96×112 template) is scaled
uniformly to fit the output and centred, so ``(96, 112)`` gives exactly the 96×112 template,
112 the 112×112 one, 224 twice it, and any other size a proportional face.

The transform from the detected points to the template is the least-squares similarity
(rotation, uniform scale, translation; no reflection) of Umeyama (1991), solved for all faces
at once; all crops of an image are then sampled in one ``grid_sample`` call.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# 112×112 template (x, y), same order as the detector's landmarks.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# The face region the template was designed for: 96×112, centred in the 112×112 crop.
_REGION_W, _REGION_H = 96.0, 112.0


def _output_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as (width, height); an int means a square."""
    if isinstance(size, (int, np.integer)):
        width = height = int(size)
    else:
        width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return width, height


def template(size: int | tuple[int, int] = 112) -> np.ndarray:
    """The 5 template points ``[5,2]`` for an output of ``size`` (int, or (width, height))."""
    width, height = _output_size(size)
    scale = min(width / _REGION_W, height / _REGION_H)
    centred = TEMPLATE_112 - np.array([56.0, 56.0])
    return centred * scale + np.array([width / 2.0, height / 2.0])


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``source`` points onto ``target`` (Umeyama 1991).

    ``source`` is ``[N,K,2]`` or ``[K,2]``, ``target`` ``[K,2]`` (or ``[N,K,2]``); returns 2×3
    matrices ``[N,2,3]`` (or ``[2,3]``) with ``target ≈ A @ p + t``. Reflections are excluded.
    """
    src = np.asarray(source, dtype=np.float64)
    single = src.ndim == 2
    src = src[None] if single else src
    dst = np.broadcast_to(np.asarray(target, dtype=np.float64), src.shape)
    if src.shape[-2:] != dst.shape[-2:] or src.shape[-1] != 2 or src.shape[-2] < 2:
        raise ValueError(f"points must be [N,K,2] with K >= 2 and match the target, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=1, keepdims=True), dst.mean(axis=1, keepdims=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    k = src.shape[1]
    cov = np.einsum("nki,nkj->nij", dst_c, src_c) / k
    u, sigma, vt = np.linalg.svd(cov)
    # Flip the last singular direction where the best orthogonal map would be a reflection.
    d = np.ones((src.shape[0], 2))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, 1] = -1.0
    rotation = np.einsum("nij,nj,njk->nik", u, d, vt)
    src_var = (src_c**2).sum(axis=(1, 2)) / k
    scale = (sigma * d).sum(axis=1) / np.maximum(src_var, 1e-12)
    linear = rotation * scale[:, None, None]
    shift = dst_mean[:, 0] - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    matrices = np.concatenate([linear, shift[:, :, None]], axis=2)
    return matrices[0] if single else matrices


def alignment_matrices(landmarks: np.ndarray | torch.Tensor, size: int | tuple[int, int] = 112) -> np.ndarray:
    """2×3 matrices ``[N,2,3]`` taking image coordinates to crop coordinates, one per face."""
    points = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    points = points.reshape(-1, 5, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    return similarity_transform(points, template(size))


def norm_crop(
    image: np.ndarray | torch.Tensor,
    landmarks: np.ndarray | torch.Tensor,
    size: int | tuple[int, int] = 112,
) -> np.ndarray:
    """Cut aligned faces out of an RGB ``H×W×C`` uint8 image.

    ``landmarks``: ``[5,2]`` for one face (returns ``[h,w,C]``) or ``[N,5,2]`` (returns
    ``[N,h,w,C]``). ``size``: 112 (the standard template), ``(96, 112)`` or any int / (width,
    height). Bilinear sampling; pixels from outside the image are 0.
    """
    pixels = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if pixels.ndim != 3:
        raise ValueError(f"image must be H×W×C, got shape {tuple(pixels.shape)}")
    single = tuple(np.shape(landmarks)) == (5, 2)
    matrices = alignment_matrices(landmarks, size)
    width, height = _output_size(size)
    n, channels = matrices.shape[0], pixels.shape[2]
    if n == 0:
        return np.zeros((0, height, width, channels), dtype=np.uint8)
    grid = _sampling_grid(matrices, width, height, pixels.shape[1], pixels.shape[0])
    source = pixels.permute(2, 0, 1)[None].float()
    # All faces' grids stacked vertically over the one image: one sampling call per image.
    sampled = F.grid_sample(
        source, grid.reshape(1, n * height, width, 2).to(source.device),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )  # fmt: skip
    crops = sampled[0].reshape(channels, n, height, width).permute(1, 2, 3, 0)
    out = crops.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out[0] if single else out


def _sampling_grid(matrices: np.ndarray, width: int, height: int, image_w: int, image_h: int) -> torch.Tensor:
    """Where each crop pixel centre comes from in the image, in grid_sample's [-1, 1] units."""
    linear, shift = matrices[:, :, :2], matrices[:, :, 2]
    # pinv: degenerate landmarks (all on one point) give a flat crop instead of an error.
    inverse = np.linalg.pinv(linear)
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    crop_points = np.stack([xs, ys], axis=-1)  # [h, w, 2]
    image_points = np.einsum("nij,nhwj->nhwi", inverse, crop_points[None] - shift[:, None, None, :])
    # align_corners=False: -1 and +1 are the outer edges of the first and last pixels.
    grid = image_points * np.array([2.0 / image_w, 2.0 / image_h]) - 1.0
    return torch.from_numpy(grid.astype(np.float32))


def parse_crop_size(text: str) -> int | tuple[int, int]:
    """``"112"`` -> 112, ``"96x112"`` -> (96, 112) (width × height), for command lines."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"crop size {text!r} must be N or WIDTHxHEIGHT, e.g. 112 or 96x112")
    return values[0] if len(values) == 1 else (values[0], values[1])


def save_aligned_crops(image: np.ndarray, landmarks, out_dir, stem: str, size: int | tuple[int, int] = 112) -> list:
    """Write one aligned crop per face as ``out_dir/{stem}_{k}.png`` (k in detection order)."""
    from pathlib import Path

    from mtcnn.io import write_image_rgb

    crops = norm_crop(image, landmarks.reshape(-1, 5, 2), size)
    paths = [Path(out_dir) / f"{stem}_{k}.png" for k in range(len(crops))]
    for path, crop in zip(paths, crops):
        write_image_rgb(path, crop)
    return paths
