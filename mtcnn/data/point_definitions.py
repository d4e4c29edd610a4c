"""Moving one source's five points onto another source's point definitions.

Annotation sets disagree on what "the eye centre" or "the nose tip" is: 300-W's eye centres are the
means of six contour points and its nose tip is point 30, CNN_FacePoint marks the pupils and a lower
nose tip, udacity68's frames sit lower on the face. A net trained on a mix learns an average of the
definitions and is worse on every set. The differences are small, mirror-symmetric shifts in the
face's own frame, so a source can be moved onto the reference definition by fixed offsets:

* the face frame of a face is its eye line: ``x`` runs from the image-left eye to the image-right eye,
  ``y`` is perpendicular, pointing down the face; the unit is the distance between the eye centres,
  so offsets hold for any face size and in-plane tilt;
* :func:`measure_point_offsets` estimates them as the mean disagreement, in that frame, between a
  reference model's points (a net trained on the reference definition only) and a source's
  annotations, minus the reference model's own bias on its own definition's faces;
* :func:`shift_points` applies them (``point_offsets`` of a source config, before ``boxes:
  from_points`` so the derived boxes follow the moved points).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Which point of the five mirrors to which (LE<->RE, N, LM<->RM): a definition cannot depend on
#: which side of the face a point is on, so measured offsets are made mirror-symmetric.
MIRROR = (1, 0, 2, 4, 3)


def face_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit x (eye line) and y (down the face) axes [M, 2] and the eye distance [M] of [M, 5, 2] points."""
    p = np.asarray(points, np.float64)
    eye_line = p[:, 1] - p[:, 0]
    distance = np.linalg.norm(eye_line, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ex = eye_line / distance[:, None]
    # Image y grows downwards: turning the eye line by +90 degrees points down the face.
    ey = np.stack([-ex[:, 1], ex[:, 0]], axis=1)
    return ex, ey, distance


def symmetrise_offsets(offsets: np.ndarray) -> np.ndarray:
    """The mirror-symmetric part of [5, 2] face-frame offsets (the x of a mirrored point changes sign)."""
    o = np.asarray(offsets, np.float64)
    mirrored = o[list(MIRROR)] * np.array([-1.0, 1.0])
    return (o + mirrored) / 2


def shift_points(points: np.ndarray, offsets: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """[M, 5, 2] points moved by [5, 2] face-frame offsets (eye-distance units); float32.

    A face without both eye centres (NaN) has no frame and is returned unchanged; a missing (NaN)
    point stays missing.
    """
    p = np.asarray(points, np.float32)
    o = np.asarray(offsets, np.float64)
    if p.ndim != 3 or p.shape[1:] != (5, 2):
        raise ValueError(f"expected [M, 5, 2] points, got {p.shape}")
    if o.shape != (5, 2):
        raise ValueError(f"expected 5 (x, y) offsets, got shape {o.shape}")
    ex, ey, d = face_axes(p)
    framed = np.isfinite(d) & (d > 0)
    move = (o[None, :, 0:1] * ex[:, None] + o[None, :, 1:2] * ey[:, None]) * d[:, None, None]
    out = p.astype(np.float64) + np.where(framed[:, None, None], move, 0.0)
    return out.astype(np.float32)


def mean_face_frame_residual(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean of (predicted - target) per point in the targets' face frames, eye-distance units, [5, 2].

    Faces without a frame and missing points are left out of the mean of that point.
    """
    pred = np.asarray(predicted, np.float64)
    tgt = np.asarray(target, np.float64)
    ex, ey, d = face_axes(tgt)
    r = pred - tgt
    along = (r * ex[:, None]).sum(-1) / d[:, None]
    down = (r * ey[:, None]).sum(-1) / d[:, None]
    frame = np.stack([along, down], axis=-1)  # [M, 5, 2]
    if not np.isfinite(frame).any():
        raise ValueError("no face with both eye centres and the point: nothing to measure")
    return np.nanmean(np.where(np.isfinite(frame), frame, np.nan), axis=0)


def measure_point_offsets(predicted: np.ndarray, target: np.ndarray, reference_predicted: np.ndarray,
                          reference_target: np.ndarray) -> np.ndarray:
    """The [5, 2] offsets that move ``target``'s definition onto the reference's (mirror-symmetric).

    ``predicted`` are a reference model's points on the source's faces and ``reference_*`` the same
    model on faces of its own definition; subtracting its own bias leaves the definitions' difference.
    Adding the result to the source's points (:func:`shift_points`) gives the reference's definition.
    """
    own = mean_face_frame_residual(predicted, target)
    bias = mean_face_frame_residual(reference_predicted, reference_target)
    return symmetrise_offsets(own - bias)


def offsets_from_samples(onet, samples: str, reference: str, sources: dict[str, str], *, max_samples: int = 40000,
                         seed: int = 0, batch_size: int = 1024) -> dict[str, dict]:
    """:func:`measure_point_offsets` for each source of an O-Net samples file's landmark crops.

    ``reference`` and each of ``sources`` are glob patterns on the crops' source image paths
    (``*/cnn_facepoint/*``); ``onet`` is the reference model (an O-Net trained on the reference
    definition). A seeded random ``max_samples`` of the crops are scored. Returns, per source name,
    its ``offsets`` ([5, 2] list), ``faces`` (crops scored) and the reference's ``reference_faces``.
    """
    import fnmatch

    import h5py
    import torch

    from mtcnn.errors import DataError

    with h5py.File(samples, "r") as f:
        if "landmark" not in f or "sources" not in f:
            raise DataError(f"{samples}: no landmark samples with their source paths (an O-Net samples file)")
        group = f["landmark"]
        n = len(group["source"])
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, min(n, max_samples), replace=False))
        images = group["images"][idx]
        target = group["landmark"][idx].reshape(-1, 5, 2).astype(np.float64)
        paths = np.array([p.decode() if isinstance(p, bytes) else str(p) for p in f["sources"][:]], dtype=object)
        source_paths = paths[group["source"][idx]]
    predicted = []
    onet.eval()
    with torch.inference_mode():
        for a in range(0, len(idx), batch_size):
            x = torch.from_numpy(images[a : a + batch_size]).permute(0, 3, 1, 2).float().sub(127.5).div(128)
            predicted.append(onet(x)[2].reshape(-1, 5, 2).double().numpy())
    pred = np.concatenate(predicted) if predicted else np.zeros((0, 5, 2))

    def pick(pattern: str) -> np.ndarray:
        return np.array([fnmatch.fnmatch(p, pattern) for p in source_paths], dtype=bool)

    ref = pick(reference)
    if not ref.any():
        raise DataError(f"{samples}: no landmark crop's source matches the reference pattern '{reference}'")
    out = {}
    for name, pattern in sources.items():
        m = pick(pattern)
        if not m.any():
            raise DataError(f"{samples}: no landmark crop's source matches '{pattern}' (source '{name}')")
        offsets = measure_point_offsets(pred[m], target[m], pred[ref], target[ref])
        out[name] = {"offsets": np.round(offsets, 4).tolist(), "faces": int(m.sum()), "reference_faces": int(ref.sum())}
    return out
