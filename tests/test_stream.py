import json
from fractions import Fraction
from math import pi
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from mtcnn import MTCNN
from mtcnn.commands.detect_video import main as detect_video_main
from mtcnn.io import ImageReadError
from mtcnn.nets import build_net
from mtcnn.ops.np_boxes import box_iou
from mtcnn.smoothing import LandmarkFilter, LandmarkSmoothing, OneEuroFilter, OneEuroSettings
from mtcnn.stream import FaceTracker, SceneCutDetector, detect_stream, track


def _noise_clip(path, frames: int, seed: int):
    """A 64x48 MJPG clip of random frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _detector_that_finds_faces_everywhere() -> MTCNN:
    torch.manual_seed(0)
    nets = {n: build_net(n) for n in ("pnet", "rnet", "onet")}
    return MTCNN(nets=nets, thresholds=(0.0, 0.0, 0.0), min_face_size=24, device="cpu")


def test_video_frames_are_batched_and_written(tmp_path):
    path = _noise_clip(tmp_path / "clip.avi", frames=7, seed=0)
    detector = _detector_that_finds_faces_everywhere()
    stats = detect_stream(detector, path, json_path=tmp_path / "f.jsonl", out_video=tmp_path / "o.mp4", batch_size=3, every=2)
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert stats["frames"] == 4 and [r["frame"] for r in lines] == [0, 2, 4, 6]
    assert stats["faces"] == sum(len(r["faces"]) for r in lines) > 0
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_missing_video_is_one_clear_error(tmp_path):
    with pytest.raises(ImageReadError, match="missing.mp4: cannot open video"):
        detect_stream(None, tmp_path / "missing.mp4")


def test_video_writes_aligned_crops(tmp_path):
    path = _noise_clip(tmp_path / "clip.avi", frames=3, seed=1)
    detector = _detector_that_finds_faces_everywhere()
    stats = detect_stream(detector, path, json_path=tmp_path / "f.jsonl", crops_dir=tmp_path / "crops", crop_size=(96, 112))
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    expected = sorted(f"frame{r['frame']:06d}_{k}.png" for r in lines for k in range(len(r["faces"])))
    assert stats["faces"] > 0 and sorted(p.name for p in (tmp_path / "crops").iterdir()) == expected
    assert cv2.imread(str(tmp_path / "crops" / expected[0])).shape == (112, 96, 3)


# --- Tracking -------------------------------------------------------------------------------

FACE_FILES = ("Abbas_Kiarostami_0001.jpg", "AJ_Cook_0001.jpg")


def test_one_euro_matches_a_hand_computed_sequence():
    # Cutoffs of 1/(2π) Hz sampled every second give α = 1/(1 + 1) = 1/2 exactly.
    still = OneEuroFilter(OneEuroSettings(min_cutoff=1 / (2 * pi), beta=0.0, d_cutoff=1 / (2 * pi)))
    assert [float(still([x], t)[0]) for t, x in enumerate([0.0, 2.0, 2.0, 2.0])] == pytest.approx([0, 1, 1.5, 1.75])
    # beta = 1/(2π): cutoff = (1 + |dx̂|)/(2π), so α = (1 + |dx̂|)/(2 + |dx̂|).
    #   t=1: dx = 2, dx̂ = 1, α = 2/3, x̂ = 4/3
    #   t=2: dx = 2 - 4/3 = 2/3, dx̂ = (2/3 + 1)/2 = 5/6, α = 11/17, x̂ = 22/17 + (6/17)(4/3) = 30/17
    #   t=3: x = 0: dx = -30/17, dx̂ = (-30/17 + 5/6)/2 = -95/204, α = 299/503, x̂ = (204/503)(30/17) = 360/503
    fast = OneEuroFilter(OneEuroSettings(min_cutoff=1 / (2 * pi), beta=1 / (2 * pi), d_cutoff=1 / (2 * pi)))
    expected = [Fraction(0), Fraction(4, 3), Fraction(30, 17), Fraction(360, 503)]
    got = [float(fast([x], t)[0]) for t, x in enumerate([0.0, 2.0, 2.0, 0.0])]
    assert got == pytest.approx([float(v) for v in expected], abs=1e-12)


def test_one_euro_speed_is_per_point_and_in_units_of_scale():
    settings = OneEuroSettings(min_cutoff=1 / (2 * pi), beta=1 / (2 * pi), d_cutoff=1 / (2 * pi))
    points = OneEuroFilter(settings)
    points(np.zeros((2, 2)), 0.0)
    # Point 0 moves by (3, 4) (speed 5 after d-smoothing: 2.5), point 1 stays: α = 3.5/4.5 and 1/2.
    out = points(np.array([[3.0, 4.0], [0.0, 0.0]]), 1.0)
    assert out[0] == pytest.approx(np.array([3.0, 4.0]) * 3.5 / 4.5) and out[1] == pytest.approx([0, 0])
    # Ten times the motion of a ten times larger face (scale 10) is the same speed: the same α.
    scaled = OneEuroFilter(settings)
    scaled(np.zeros((1, 2)), 0.0)
    assert scaled(np.array([[30.0, 40.0]]), 1.0, scale=10.0)[0] == pytest.approx(np.array([30.0, 40.0]) * 3.5 / 4.5)


def test_landmark_filter_smooths_position_and_shape_apart():
    half = OneEuroSettings(min_cutoff=1 / (2 * pi), beta=0.0)  # α = 1/2 at 1 s steps
    still_shape = OneEuroSettings(min_cutoff=1e-9, beta=0.0)  # α ≈ 0: the shape never changes
    points = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 2.0], [1.0, 4.0], [3.0, 4.0]])
    rigid = LandmarkFilter(LandmarkSmoothing(position=half, shape=still_shape))
    assert rigid(points, 0.0) == pytest.approx(points)
    # A translation by (6, 2): the centroid goes half way, the shape is kept as it was.
    assert rigid(points + [6.0, 2.0], 1.0) == pytest.approx(points + [3.0, 1.0])
    # A change of shape about a fixed centroid: the centroid does not move.
    shape_only = LandmarkFilter(LandmarkSmoothing(position=half, shape=half))
    shape_only(points, 0.0)
    wider = points.mean(0) + 2 * (points - points.mean(0))
    out = shape_only(wider, 1.0)
    assert out.mean(0) == pytest.approx(points.mean(0)) and out == pytest.approx(points.mean(0) + 1.5 * (points - points.mean(0)))


def test_one_euro_settings_are_checked():
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroSettings(min_cutoff=0.0)


def test_scene_cut_detector_flags_a_new_shot_only():
    cuts = SceneCutDetector(threshold=20.0)
    a = _background(120, 160)
    b = _background(120, 160, flip=True)
    frames = [a, a, np.clip(a.astype(int) + 8, 0, 255).astype(np.uint8), b, b]
    flags = [cuts(torch.from_numpy(f).permute(2, 0, 1)) for f in frames]
    assert flags == [False, False, False, True, False]


def _background(h: int, w: int, flip: bool = False) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    g = np.stack([80 + 60 * x / w, 90 + 50 * y / h, 120 - 40 * x / w], -1)
    return (255 - g if flip else g).astype(np.uint8)


def _faces(shared_data) -> list[np.ndarray]:
    folder = shared_data / "cnn_facepoint" / "lfw_5590"
    if not all((folder / name).is_file() for name in FACE_FILES):
        pytest.skip(f"needs the CNN_FacePoint faces {FACE_FILES} in {folder}")
    # The face and some hair and shoulders, 120 px a side.
    return [cv2.resize(cv2.imread(str(folder / name))[40:210, 40:210, ::-1], (120, 120), interpolation=cv2.INTER_AREA)
            for name in FACE_FILES]


def _moving_faces_clip(faces, frames: int = 20, cut_at: int | None = None, appear_at: int = 0) -> list[np.ndarray]:
    """320x240 frames: face 0 moves right and down 3 and 1 px a frame, face 1 (from
    ``appear_at``) left 2 px a frame; from ``cut_at`` on, another shot (background inverted,
    the faces elsewhere)."""
    clip = []
    for t in range(frames):
        after_cut = cut_at is not None and t >= cut_at
        frame = _background(240, 320, flip=after_cut).copy()
        x0, y0 = (10 + 3 * t, 20 + t) if not after_cut else (150 - 2 * t, 100)
        frame[y0 : y0 + 120, x0 : x0 + 120] = faces[0]
        if t >= appear_at and not after_cut:
            x1 = 190 - 2 * t
            frame[110:230, x1 : x1 + 120] = faces[1]
        clip.append(frame)
    return clip


@pytest.fixture(scope="module")
def shipped_detector():
    return MTCNN(device="cpu")


def _per_frame(detector, clip):
    return [detector.detect(frame)[0] for frame in clip]


def _assert_tracks_match(reference, tracked, min_iou: float = 0.5):
    """Every face per-frame detection finds is reported by the tracker (IoU >= min_iou), and no other."""
    for ref, trk in zip(reference, tracked, strict=True):
        assert len(trk) == len(ref), (trk.index, trk.faces.boxes, ref.boxes)
        iou = box_iou(ref.boxes.numpy(), trk.faces.boxes.numpy())
        assert (iou.max(axis=1) >= min_iou).all(), (trk.index, iou)


def test_tracking_reports_what_per_frame_detection_finds_with_stable_ids(shared_data, shipped_detector):
    clip = _moving_faces_clip(_faces(shared_data))
    reference = _per_frame(shipped_detector, clip)
    assert [len(r) for r in reference] == [2] * len(clip), "the synthetic clip should show two faces to the detector"
    tracked = list(track(clip, shipped_detector, every=5, fps=25))
    assert [t.index for t in tracked] == list(range(len(clip)))
    assert [t.full for t in tracked] == [k % 5 == 0 for k in range(len(clip))]
    _assert_tracks_match(reference, tracked)
    # Two ids for the whole clip, each on the same face throughout (which id goes first follows the
    # detector's scores, so the test finds the id of the face that starts on the left).
    assert {tuple(sorted(t.ids.tolist())) for t in tracked} == {(0, 1)}
    left_id = tracked[0].ids[torch.argmin(tracked[0].faces.boxes[:, 0])]
    lefts = [t.faces.boxes[t.ids == left_id][0, 0].item() for t in tracked]
    assert lefts == sorted(lefts), "the left face's id follows the face moving right"
    # Smoothing changes only the points, by less than a few pixels on this slow motion.
    for t in tracked:
        assert t.faces.landmarks.shape == t.raw_landmarks.shape == (2, 5, 2)
        assert (t.faces.landmarks - t.raw_landmarks).abs().max() < 6
    assert any((t.faces.landmarks != t.raw_landmarks).any() for t in tracked[1:])


def test_tracking_with_a_full_pass_every_frame_is_per_frame_detection(shared_data, shipped_detector):
    clip = _moving_faces_clip(_faces(shared_data), frames=6)
    reference = _per_frame(shipped_detector, clip)
    for ref, trk in zip(reference, track(clip, shipped_detector, every=1, smoothing=None), strict=True):
        assert trk.full
        mine, theirs = torch.argsort(trk.faces.boxes[:, 0]), torch.argsort(ref.boxes[:, 0])
        assert torch.equal(trk.faces.boxes[mine], ref.boxes[theirs])
        assert torch.equal(trk.faces.landmarks[mine], ref.landmarks[theirs])
        assert torch.equal(trk.faces.landmarks, trk.raw_landmarks)


def test_a_scene_cut_runs_the_full_cascade_and_starts_new_tracks(shared_data, shipped_detector):
    clip = _moving_faces_clip(_faces(shared_data), frames=16, cut_at=8)
    reference = _per_frame(shipped_detector, clip)
    tracked = list(track(clip, shipped_detector, every=10))
    assert [t.cut for t in tracked] == [k == 8 for k in range(16)]
    assert [t.full for t in tracked] == [k in (0, 8) for k in range(16)]
    _assert_tracks_match(reference, tracked)
    before = {tuple(t.ids.tolist()) for t in tracked[:8]}
    after = {tuple(t.ids.tolist()) for t in tracked[8:]}
    assert before == {(0, 1)} and after == {(2,)}


def test_lookback_reports_a_new_face_from_its_first_frame(shared_data, shipped_detector):
    clip = _moving_faces_clip(_faces(shared_data), frames=12, appear_at=4)
    reference = _per_frame(shipped_detector, clip)
    assert [len(r) for r in reference] == [1] * 4 + [2] * 8
    live = list(track(clip, shipped_detector, every=10))
    assert [len(t) for t in live] == [1] * 10 + [2] * 2, "without lookback a new face waits for the next full pass"
    held = list(track(clip, shipped_detector, every=10, lookback=9))
    assert [t.index for t in held] == list(range(12))
    _assert_tracks_match(reference, held)
    assert {tuple(t.ids.tolist()) for t in held[4:]} == {(0, 1)}


def test_tracker_arguments_are_checked(shipped_detector):
    with pytest.raises(ValueError, match="every must be >= 1"):
        FaceTracker(shipped_detector, every=0)
    with pytest.raises(ValueError, match="lookback use push"):
        FaceTracker(shipped_detector, lookback=2).update(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="upright faces"):
        FaceTracker(SimpleNamespace(rotation="quarter"))


def test_tracker_on_frames_without_faces_returns_the_empty_form(shipped_detector):
    frames = [np.full((96, 128, 3), 127, np.uint8)] * 3
    for t in track(frames, shipped_detector, every=2):
        assert len(t) == 0 and t.ids.shape == (0,) and t.faces.landmarks.shape == (0, 5, 2) and t.to_records() == []


def test_video_tracking_writes_ids_to_json(tmp_path, shared_data):
    clip = _moving_faces_clip(_faces(shared_data), frames=8)
    path = tmp_path / "faces.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    for frame in clip:
        writer.write(frame[:, :, ::-1])
    writer.release()
    code = detect_video_main([str(path), "--track", "--full-every", "4", "--json", str(tmp_path / "t.jsonl"),
                              "--out", str(tmp_path / "t.mp4"), "--device", "cpu", "--quiet"])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(8))
    assert [r["full"] for r in lines] == [k % 4 == 0 for k in range(8)]
    assert all(sorted(f["id"] for f in r["faces"]) == [0, 1] for r in lines)
    assert set(lines[0]["faces"][0]) == {"id", "box", "score", "landmarks"}
    assert (tmp_path / "t.mp4").stat().st_size > 0


def test_video_tracking_refuses_bad_smoothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        detect_video_main([str(tmp_path / "any.avi"), "--track", "--smooth-position", "0", "15"])
    assert stop.value.code == 2 and "min_cutoff > 0" in capsys.readouterr().err
