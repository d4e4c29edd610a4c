"""Tracking against per-frame detection on the same frames: coverage, extra faces and false
tracks, id switches, and landmark jitter on still faces with and without smoothing.

Per-frame detection (the full cascade on every frame) is the reference: there is no ground truth
in a video, so a tracker face counts as right when per-frame detection reports the same face
(IoU ≥ ``iou``, one-to-one per frame by the Hungarian method).

* coverage: the share of per-frame detection's faces the tracker also reports; *steady*
  coverage counts only faces per-frame detection reports on ``steady`` frames in a row or more
  (its one- and two-frame detections are mostly blinks on turned, blurred or false faces).
* extra faces: tracker faces per-frame detection does not report on that frame; a track is
  *false* when fewer than half of its faces are matched (a track that lives on a face
  per-frame detection finds is not false even where per-frame detection blinks).
* id switches: per-frame detection's faces are linked frame to frame (IoU ≥ ``iou`` between a
  face and one on the previous frame, one-to-one); a link whose two faces the tracker reports
  under different ids is a switch. Links across a scene cut count too (the rare face at the
  same place in the next shot), so the figure errs against the tracker.
* jitter: frame-to-frame motion of the points in % of the eye distance, averaged over points,
  on *still* faces: a tracked face at frame t whose points' centroid, over frames t-w..t+w of
  its track, stays within ``still_spread`` of the eye distance (RMS around its mean). Reported
  for the tracker's raw and smoothed points and for per-frame detection's points on the same
  faces and frames.
* lag: on *moving* faces (centroid moving ≥ ``moving_speed`` eye distances per frame over the
  window) the mean distance of the raw and of the smoothed points from per-frame detection's,
  in % of the eye distance (smoothing that lags shows as a larger smoothed figure), and the
  delay of the smoothed points in frames: how far back along its motion the smoothed centroid
  trails the raw one (the offset projected on the velocity, over the speed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mtcnn.ops.np_boxes import box_iou


def match_boxes(a: np.ndarray, b: np.ndarray, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of boxes ``a [N,4]`` and ``b [M,4]`` maximising total IoU; pairs
    below ``iou`` are dropped. Returns index arrays ``(rows into a, cols into b)``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    from scipy.optimize import linear_sum_assignment

    overlap = box_iou(a, b)
    rows, cols = linear_sum_assignment(-overlap)
    good = overlap[rows, cols] >= iou
    return rows[good].astype(np.int64), cols[good].astype(np.int64)


@dataclass(frozen=True)
class FrameFaces:
    """One frame's faces as plain arrays: boxes ``[N,4]``, landmarks ``[N,K,2]``, and for a
    tracker ids ``[N]`` and smoothed landmarks."""

    boxes: np.ndarray
    landmarks: np.ndarray
    ids: np.ndarray | None = None
    smoothed: np.ndarray | None = None
    full: bool = False
    cut: bool = False

    @classmethod
    def from_detections(cls, faces) -> "FrameFaces":
        return cls(faces.boxes.numpy().astype(np.float64), faces.landmarks.numpy().astype(np.float64))

    @classmethod
    def from_tracked(cls, frame) -> "FrameFaces":
        return cls(frame.faces.boxes.numpy().astype(np.float64), frame.raw_landmarks.numpy().astype(np.float64),
                   frame.ids.numpy(), frame.faces.landmarks.numpy().astype(np.float64), frame.full, frame.cut)


@dataclass(frozen=True)
class TrackingComparison:
    frames: int
    reference_faces: int
    tracker_faces: int
    matched: int
    steady_faces: int
    steady_matched: int
    extra_faces: int
    tracks: int
    false_tracks: int
    false_track_faces: int
    links: int
    id_switches: int
    full_passes: int
    cuts: int
    still_samples: int
    jitter_reference: float
    jitter_raw: float
    jitter_smoothed: float
    moving_samples: int
    lag_raw: float
    lag_smoothed: float
    lag_frames: float

    @property
    def coverage(self) -> float:
        return self.matched / max(self.reference_faces, 1)

    @property
    def steady_coverage(self) -> float:
        return self.steady_matched / max(self.steady_faces, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "coverage": self.coverage, "steady_coverage": self.steady_coverage}


def _eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[0] - points[1])) if len(points) >= 2 else 0.0


def compare_tracking(
    reference: Sequence[FrameFaces],
    tracked: Sequence[FrameFaces],
    *,
    iou: float = 0.5,
    window: int = 5,
    still_spread: float = 0.04,
    moving_speed: float = 0.02,
    steady: int = 3,
) -> TrackingComparison:
    """Compare a tracker's frames with per-frame detection's on the same frames (see the module doc)."""
    if len(reference) != len(tracked):
        raise ValueError(f"{len(reference)} reference frames but {len(tracked)} tracked frames")
    n = len(reference)
    # Per frame: tracker face -> matched reference face (or -1).
    to_ref: list[np.ndarray] = []
    matched = extra = 0
    for ref, trk in zip(reference, tracked):
        rows, cols = match_boxes(trk.boxes, ref.boxes, iou)
        m = np.full(len(trk.boxes), -1, dtype=np.int64)
        m[rows] = cols
        to_ref.append(m)
        matched += len(rows)
        extra += len(trk.boxes) - len(rows)

    # False tracks: fewer than half of their faces matched.
    faces_of: dict[int, list[tuple[int, int]]] = {}
    for t, trk in enumerate(tracked):
        for k, track_id in enumerate(trk.ids):
            faces_of.setdefault(int(track_id), []).append((t, k))
    false_tracks = false_faces = 0
    for faces in faces_of.values():
        hits = sum(to_ref[t][k] >= 0 for t, k in faces)
        if hits * 2 < len(faces):
            false_tracks += 1
            false_faces += len(faces)

    # Per-frame detection's faces linked frame to frame: runs (one id per run of frames a
    # face is detected in, for steady coverage) and id switches along the links.
    links = switches = 0
    run: list[np.ndarray] = []
    run_length: list[int] = []
    for t in range(n):
        ids = np.full(len(reference[t].boxes), -1, dtype=np.int64)
        if t:
            rows, cols = match_boxes(reference[t - 1].boxes, reference[t].boxes, iou)
            ids[cols] = run[t - 1][rows]
            id_prev = _ids_of_reference(tracked[t - 1], to_ref[t - 1], len(reference[t - 1].boxes))
            id_now = _ids_of_reference(tracked[t], to_ref[t], len(reference[t].boxes))
            both = (id_prev[rows] >= 0) & (id_now[cols] >= 0)
            links += int(both.sum())
            switches += int((id_prev[rows] != id_now[cols])[both].sum())
        for k in np.nonzero(ids < 0)[0]:
            ids[k] = len(run_length)
            run_length.append(0)
        for r in ids:
            run_length[r] += 1
        run.append(ids)

    steady_faces = steady_matched = 0
    lengths = np.asarray(run_length, dtype=np.int64)
    for t in range(n):
        covered = np.zeros(len(reference[t].boxes), dtype=bool)
        covered[to_ref[t][to_ref[t] >= 0]] = True
        is_steady = lengths[run[t]] >= steady
        steady_faces += int(is_steady.sum())
        steady_matched += int((is_steady & covered).sum())

    jitter, lag = _jitter_and_lag(reference, tracked, to_ref, window, still_spread, moving_speed)
    return TrackingComparison(
        frames=n, reference_faces=sum(len(r.boxes) for r in reference), tracker_faces=sum(len(t.boxes) for t in tracked),
        matched=matched, steady_faces=steady_faces, steady_matched=steady_matched, extra_faces=extra,
        tracks=len(faces_of), false_tracks=false_tracks, false_track_faces=false_faces,
        links=links, id_switches=switches, full_passes=sum(t.full for t in tracked), cuts=sum(t.cut for t in tracked),
        still_samples=jitter[0], jitter_reference=jitter[1], jitter_raw=jitter[2], jitter_smoothed=jitter[3],
        moving_samples=lag[0], lag_raw=lag[1], lag_smoothed=lag[2], lag_frames=lag[3],
    )  # fmt: skip


def _ids_of_reference(trk: FrameFaces, to_ref: np.ndarray, count: int) -> np.ndarray:
    ids = np.full(count, -1, dtype=np.int64)
    for k, r in enumerate(to_ref):
        if r >= 0:
            ids[r] = trk.ids[k]
    return ids


def _jitter_and_lag(reference, tracked, to_ref, window, still_spread, moving_speed):
    # Each track's faces frame by frame: id -> {frame: face index}.
    where: dict[int, dict[int, int]] = {}
    for t, trk in enumerate(tracked):
        for k, track_id in enumerate(trk.ids):
            where.setdefault(int(track_id), {})[t] = k
    still = [0, [], [], []]
    moving = [0, [], [], []]
    for track_id, frames in where.items():
        for t, k in frames.items():
            span = range(t - window, t + window + 1)
            if not all(s in frames for s in span):
                continue
            trk = tracked[t]
            eye = _eye_distance(trk.landmarks[k])
            if eye <= 0:
                continue
            centroids = np.stack([tracked[s].landmarks[frames[s]].mean(axis=0) for s in span])
            spread = float(np.sqrt(((centroids - centroids.mean(axis=0)) ** 2).sum(axis=1).mean())) / eye
            speed = float(np.linalg.norm(centroids[-1] - centroids[0])) / (2 * window) / eye
            r_now = to_ref[t][k]
            if spread <= still_spread:
                prev = tracked[t - 1]
                kp = frames[t - 1]
                r_prev = to_ref[t - 1][kp]
                if r_now < 0 or r_prev < 0:
                    continue
                still[0] += 1
                still[1].append(_motion(reference[t].landmarks[r_now], reference[t - 1].landmarks[r_prev], eye))
                still[2].append(_motion(trk.landmarks[k], prev.landmarks[kp], eye))
                smoothed_now = trk.smoothed if trk.smoothed is not None else trk.landmarks
                smoothed_prev = prev.smoothed if prev.smoothed is not None else prev.landmarks
                still[3].append(_motion(smoothed_now[k], smoothed_prev[kp], eye))
            elif speed >= moving_speed and r_now >= 0:
                truth = reference[t].landmarks[r_now]
                moving[0] += 1
                moving[1].append(_motion(trk.landmarks[k], truth, eye))
                smoothed = trk.smoothed if trk.smoothed is not None else trk.landmarks
                moving[2].append(_motion(smoothed[k], truth, eye))
                velocity = (centroids[-1] - centroids[0]) / (2 * window)
                offset = trk.landmarks[k].mean(axis=0) - smoothed[k].mean(axis=0)
                moving[3].append(float(offset @ velocity / (velocity @ velocity)))
    mean = lambda values: float(np.mean(values)) if values else float("nan")  # noqa: E731
    return (still[0], mean(still[1]), mean(still[2]), mean(still[3])), (moving[0], mean(moving[1]), mean(moving[2]), mean(moving[3]))


def _motion(a: np.ndarray, b: np.ndarray, eye: float) -> float:
    """Mean distance between corresponding points, in % of ``eye``."""
    k = min(len(a), len(b))
    return float(np.linalg.norm(a[:k] - b[:k], axis=1).mean()) / eye * 100


__all__ = ["FrameFaces", "TrackingComparison", "compare_tracking", "match_boxes"]
