import numpy as np
import pytest

from mtcnn.eval.tracking import FrameFaces, compare_tracking, match_boxes


def _face(x: float, y: float = 0.0, size: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    box = np.array([x, y, x + size, y + size])
    eyes = np.array([[x + 10, y + 15], [x + 30, y + 15], [x + 20, y + 25], [x + 12, y + 32], [x + 28, y + 32]])
    return box, eyes


def _frame(faces, ids=None, smoothed=None) -> FrameFaces:
    boxes = np.array([f[0] for f in faces]).reshape(-1, 4)
    points = np.array([f[1] for f in faces]).reshape(-1, 5, 2)
    return FrameFaces(boxes, points, None if ids is None else np.array(ids), smoothed)


def test_match_boxes_is_one_to_one_above_the_threshold():
    a = np.array([[0, 0, 10, 10], [100, 0, 110, 10]], float)
    b = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [300, 0, 310, 10]], float)
    rows, cols = match_boxes(a, b, 0.5)
    assert rows.tolist() == [0] and cols.tolist() == [1]
    assert [len(x) for x in match_boxes(a, np.zeros((0, 4)))] == [0, 0]


def test_coverage_extra_faces_false_tracks_and_id_switches():
    # Per-frame detection: one face at x=0 in 4 frames, plus a one-frame face at x=200 in frame 1.
    reference = [_frame([_face(0)]), _frame([_face(0), _face(200)]), _frame([_face(0)]), _frame([_face(0)])]
    # The tracker: misses frame 0, switches id between frames 2 and 3, and has a false track at
    # x=400 in frames 1-3.
    tracked = [_frame([], []), _frame([_face(1), _face(400)], [1, 9]), _frame([_face(1), _face(400)], [1, 9]),
               _frame([_face(2), _face(400)], [2, 9])]
    c = compare_tracking(reference, tracked)
    assert (c.reference_faces, c.matched, c.tracker_faces, c.extra_faces) == (5, 3, 6, 3)
    assert c.coverage == pytest.approx(3 / 5)
    # Steady faces: those per-frame detection finds 3 frames running or more (the x=0 face).
    assert (c.steady_faces, c.steady_matched) == (4, 3)
    assert (c.tracks, c.false_tracks, c.false_track_faces) == (3, 1, 3)
    # Links 0-1 (no tracker face at 0), 1-2 (same id), 2-3 (1 -> 2).
    assert (c.links, c.id_switches) == (2, 1)


def test_jitter_on_a_still_face_with_and_without_smoothing():
    rng = np.random.default_rng(0)
    box, points = _face(100, 100)
    n = 30
    raw = [points + rng.normal(0, 0.4, points.shape) for _ in range(n)]
    smooth = [points + 0.25 * (r - points) for r in raw]
    reference = [_frame([(box, r)]) for r in raw]
    tracked = [FrameFaces(box[None], r[None], np.array([0]), s[None]) for r, s in zip(raw, smooth)]
    c = compare_tracking(reference, tracked, window=3)
    assert c.still_samples == n - 6
    assert c.jitter_raw == pytest.approx(c.jitter_reference)
    assert c.jitter_smoothed == pytest.approx(0.25 * c.jitter_raw)
    # 0.4 px noise per axis on a 20 px eye distance: ~ sqrt(pi)·0.4 px of motion between frames, ~3.5 %.
    assert 2.5 < c.jitter_raw < 4.5
    assert c.moving_samples == 0


def test_lag_of_smoothed_points_on_a_moving_face_in_frames():
    n = 30
    faces = [_face(10 + 4 * t, 50) for t in range(n)]
    reference = [_frame([f]) for f in faces]
    # Smoothed points trail by exactly 1.5 frames (6 px at 4 px a frame).
    tracked = [FrameFaces(f[0][None], f[1][None], np.array([0]), (f[1] - [6.0, 0.0])[None]) for f in faces]
    c = compare_tracking(reference, tracked, window=2)
    assert c.moving_samples == n - 4 and c.still_samples == 0
    assert c.lag_raw == pytest.approx(0.0) and c.lag_smoothed == pytest.approx(30.0)  # 6 px of a 20 px eye distance
    assert c.lag_frames == pytest.approx(1.5)
