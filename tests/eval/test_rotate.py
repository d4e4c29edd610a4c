"""Rotated evaluation (mtcnn.eval.rotate, mtcnn.rotation): photos, boxes and points turned together.

Quarter turns are checked against independent formulas and against np.rot90's pixel permutation;
other angles by where a marked point lands in the warped photo; the canvas by the pixel mass it
keeps; the random angles by their seed; the whole ``--rotate all`` report with a stand-in detector
that finds bright squares exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtcnn.data.annotations import ImageAnnotation
from mtcnn.eval.rotate import detect_rotated, image_angles, rotate_sample, rotation_settings
from mtcnn.eval.runner import evaluate_detection_set
from mtcnn.rotation import invert_affine, rotate_face_boxes, rotate_image, rotate_points, rotation_matrix
from mtcnn.structures import Detections

ANGLES = [-170.0, -135.0, -45.0, -20.0, 7.5, 30.0, 60.0, 123.0, 179.0]


def quarter_formula(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Where np.rot90(image, k) puts a point (continuous coordinates), written out by hand."""
    x, y = points[..., 0], points[..., 1]
    out = {0: (x, y), 1: (y, width - x), 2: (width - x, height - y), 3: (height - y, x)}[k % 4]
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("k", [0, 1, 2, 3, -1])
def test_quarter_turn_matrices_are_the_exact_formulas(k):
    width, height = 37, 23
    matrix, out_w, out_h = rotation_matrix(90.0 * k, width, height)
    assert (out_w, out_h) == ((width, height) if k % 2 == 0 else (height, width))
    assert np.array_equal(matrix, np.round(matrix))  # whole numbers: no rounding anywhere
    points = np.random.default_rng(k + 5).uniform(-10, 50, (50, 2))
    assert np.array_equal(rotate_points(points, matrix), quarter_formula(points, k, width, height))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turn_images_are_np_rot90_and_pixels_follow_their_points(k):
    rng = np.random.default_rng(k)
    image = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    turned, matrix = rotate_image(image, 90.0 * k)
    assert np.array_equal(turned, np.rot90(image, k))
    # Every pixel centre lands on the centre of the pixel that now holds its value.
    rows, cols = np.mgrid[0:23, 0:37]
    centres = np.stack([cols + 0.5, rows + 0.5], axis=-1).reshape(-1, 2)
    moved = rotate_points(centres, matrix) - 0.5
    assert np.allclose(moved, np.round(moved))
    mx, my = np.round(moved).astype(int).T
    assert np.array_equal(turned[my, mx], image[rows.reshape(-1), cols.reshape(-1)])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turn_boxes_keep_their_size_exactly(k):
    boxes = np.array([[3.0, 4.0, 13.0, 19.0], [0.5, 0.25, 8.75, 2.5]])
    width, height = 40, 30
    matrix, _, _ = rotation_matrix(90.0 * k, width, height)
    turned = rotate_face_boxes(boxes, matrix, 90.0 * k)
    corners = quarter_formula(np.stack([boxes[:, :2], boxes[:, 2:]], axis=1), k, width, height)
    assert np.array_equal(turned, np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    tw, th = turned[:, 2] - turned[:, 0], turned[:, 3] - turned[:, 1]
    assert np.array_equal((tw, th), (h, w) if k % 2 else (w, h))
    # ... and a full turn back gives the same boxes.
    back_matrix, _, _ = rotation_matrix(-90.0 * k, *((height, width) if k % 2 else (width, height)))
    assert np.array_equal(rotate_face_boxes(turned, back_matrix, -90.0 * k), boxes)


@pytest.mark.parametrize("angle", ANGLES)
def test_other_angles_give_the_rotated_face_square(angle):
    boxes = np.array([[10.0, 20.0, 30.0, 60.0], [50.0, 50.0, 50.0, 70.0]])  # the second has no width
    matrix, _, _ = rotation_matrix(angle, 100, 80)
    turned = rotate_face_boxes(boxes, matrix, angle)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert np.allclose(turned[:, 2] - turned[:, 0], side) and np.allclose(turned[:, 3] - turned[:, 1], side)
    centre = rotate_points((boxes[:, :2] + boxes[:, 2:]) / 2, matrix)
    assert np.allclose((turned[:, :2] + turned[:, 2:]) / 2, centre)
    # The centre is turned about the image centre by the angle (counter-clockwise as shown).
    a = np.radians(angle)
    offset = np.array([20.0, 40.0]) - [50.0, 40.0]
    by_hand = [offset[0] * np.cos(a) + offset[1] * np.sin(a), -offset[0] * np.sin(a) + offset[1] * np.cos(a)]
    _, out_w, out_h = rotation_matrix(angle, 100, 80)
    assert np.allclose(centre[0] - [out_w / 2, out_h / 2], by_hand)


@pytest.mark.parametrize("angle", ANGLES)
def test_points_round_trip_and_the_canvas_holds_every_pixel(angle):
    width, height = 64, 41
    matrix, out_w, out_h = rotation_matrix(angle, width, height)
    points = np.random.default_rng(3).uniform(0, 60, (20, 5, 2))
    points[0, 2] = np.nan
    back = rotate_points(rotate_points(points, matrix), invert_affine(matrix))
    assert np.allclose(back, points, atol=1e-9, equal_nan=True) and np.isnan(back[0, 2]).all()
    corners = rotate_points(np.array([[0, 0], [width, 0], [0, height], [width, height]], float), matrix)
    assert corners.min() >= -1e-9 and (corners[:, 0] <= out_w + 1e-9).all() and (corners[:, 1] <= out_h + 1e-9).all()
    # The smallest such canvas: one pixel less would cut a corner off.
    assert np.ptp(corners[:, 0]) > out_w - 1 and np.ptp(corners[:, 1]) > out_h - 1
    # No pixel is lost: the turned photo of a white photo keeps its mass (bilinear edges aside).
    turned, _ = rotate_image(np.full((height, width, 3), 200, np.uint8), angle)
    assert turned.shape == (out_h, out_w, 3)
    mass = turned[..., 0].astype(float).sum() / 200
    assert abs(mass - width * height) < 0.01 * width * height


@pytest.mark.parametrize("angle", ANGLES + [90.0, 180.0])
def test_a_marked_point_lands_where_its_matrix_says(angle):
    """The warp and the point mapping agree to a tenth of a pixel (the half-pixel convention)."""
    height, width = 90, 120
    point = np.array([83.3, 27.6])
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 1] = np.clip(255 * np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * 2.0**2)), 0, 255).astype(np.uint8)
    turned, matrix = rotate_image(image, angle)
    weight = turned[..., 1].astype(float)
    ty, tx = np.mgrid[0 : turned.shape[0], 0 : turned.shape[1]] + 0.5
    found = np.array([(tx * weight).sum(), (ty * weight).sum()]) / weight.sum()
    assert np.allclose(found, rotate_points(point, matrix), atol=0.1)


def test_image_round_trip_at_any_angle_is_the_photo_up_to_interpolation():
    yy, xx = np.mgrid[0:60, 0:80]
    image = np.stack([xx * 3, yy * 4, 100 + 0 * xx], axis=-1).astype(np.uint8)
    turned, m1 = rotate_image(image, 33.0)
    back, m2 = rotate_image(turned, -33.0)
    # The photo sits in the middle of the round trip's canvas, at the composed translation.
    linear, (dx, dy) = m2[:, :2] @ m1[:, :2], m2[:, :2] @ m1[:, 2] + m2[:, 2]
    assert np.allclose(linear, np.eye(2), atol=1e-12)
    warped = cv2.warpAffine(back, np.array([[1, 0, -dx], [0, 1, -dy]], float), (80, 60), flags=cv2.INTER_LINEAR)
    inner = (slice(3, -3), slice(3, -3))
    assert np.abs(warped[inner].astype(int) - image[inner].astype(int)).max() <= 3


def test_rotate_sample_turns_the_record_with_its_photo():
    record = ImageAnnotation(Path("/x/a.jpg"), np.array([[10, 20, 30, 50], [0, 0, 0, 0]], np.float32),
                             np.array([[[12, 25], [28, 25], [20, 35], [14, 44], [26, 44]], [[np.nan, np.nan]] * 5], np.float32),
                             np.array([False, True]), {"names": np.array(["a", "b"])})
    image = np.zeros((60, 40, 3), np.uint8)
    turned, pixels = rotate_sample(record, image, 90.0)
    assert pixels.shape == (40, 60, 3) and (turned.width, turned.height) == (60, 40)
    assert np.array_equal(turned.boxes[0], [20, 10, 50, 30])  # (x, y) -> (y, 40 - x)
    assert np.array_equal(turned.landmarks[0, 0], [25, 28])
    assert np.isnan(turned.landmarks[1]).all() and turned.ignore.tolist() == [False, True]
    assert turned.attributes["names"].tolist() == ["a", "b"] and turned.path == record.path
    same, pixels0 = rotate_sample(record, image, 0.0)
    assert np.array_equal(same.boxes, record.boxes) and np.array_equal(pixels0, image)


def test_random_angles_are_seeded_per_photo():
    records = [ImageAnnotation(Path(f"/data/set/img_{i:03d}.jpg"), np.zeros((0, 4)), np.zeros((0, 0, 2)), np.zeros(0, bool))
               for i in range(400)]
    a = image_angles(records, "random", seed=0)
    assert np.array_equal(a, image_angles(records, "random", seed=0))
    assert not np.allclose(a, image_angles(records, "random", seed=1))
    # A photo keeps its angle whatever else is in the set, and in any order.
    assert np.array_equal(image_angles(records[::-1][:50], "random", 0), a[::-1][:50])
    assert (a >= -180).all() and (a < 180).all()
    assert abs(a.mean()) < 20 and np.histogram(a, bins=4, range=(-180, 180))[0].min() > 70
    assert np.array_equal(image_angles(records[:3], "270"), [270.0] * 3)
    assert rotation_settings("all") == ("0", "90", "180", "270", "random") and rotation_settings("90") == ("90",)
    with pytest.raises(ValueError):
        rotation_settings("45")


# --------------------------------------------------------------------------------------------
# the --rotate report, with a stand-in detector that finds bright squares exactly
# --------------------------------------------------------------------------------------------


class SquareFinder:
    """Finds each bright blob's bounding box (score 1). Upright squares give the annotated box
    exactly; squares turned by a quarter too."""

    def __init__(self):
        self.settings = {"min_face_size": 20.0, "weights": "<stand-in>", "weights_sha256": "0"}
        self.device = torch.device("cpu")
        self.calls = 0

    def size_problem(self, h, w):
        return None

    def detect(self, images):
        self.calls += 1
        out = []
        for image in images:
            n, labels, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 127).astype(np.uint8))
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append(Detections(b, torch.ones(len(b)), torch.zeros(len(b), 5, 2)))
        return out


@pytest.fixture()
def square_set(tmp_path):
    lines = []
    for i, (w, h, squares) in enumerate([(120, 90, [(10, 10, 40)]), (100, 140, [(50, 20, 30), (8, 90, 36)]), (64, 64, [(12, 14, 30)])]):
        image = np.zeros((h, w, 3), np.uint8)
        boxes = []
        for x, y, s in squares:
            image[y : y + s, x : x + s] = 255
            boxes.append(f"{x} {y} {x + s} {y + s}")
        cv2.imwrite(str(tmp_path / f"sq{i}.png"), image)
        lines += [f"sq{i}.png {b}" for b in boxes]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_rotate_all_reports_each_setting_side_by_side(square_set, tmp_path):
    finder = SquareFinder()
    outcome = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "out", detector=finder,
                                     rotate="all", seed=3, batch_size=2, log=lambda _m: None, progress=False)
    assert outcome.exit_code == 0, outcome.errors
    table = outcome.report["rotation"]["settings"]
    assert list(table) == ["0", "90", "180", "270", "random"]
    for name in ("0", "90", "180", "270"):
        assert table[name]["ap50"] == pytest.approx(1.0) and table[name]["recall_at_100_fp"] == 1.0
        assert table[name]["num_faces"] == 4
    # The random angles are recorded, seeded, and the report says which seed.
    assert outcome.report["rotation"]["seed"] == 3 and len(table["random"]["angles"]) == 3
    records = [ImageAnnotation(square_set / f"sq{i}.png", np.zeros((0, 4)), np.zeros((0, 0, 2)), np.zeros(0, bool)) for i in range(3)]
    assert list(table["random"]["angles"].values()) == pytest.approx(image_angles(records, "random", 3).tolist(), abs=1e-3)
    # Photos are read once and each setting's batch goes through one detect call: 2 batches x 5.
    assert finder.calls == 10
    assert (tmp_path / "out" / "pr_curve_rotations.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["rotation"]["settings"]["90"]["ap50"] == pytest.approx(1.0)


def test_rotate_one_angle_reports_as_the_upright_evaluation(square_set, tmp_path):
    upright = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "a",
                                     detector=SquareFinder(), log=lambda _m: None, progress=False)
    turned = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "b",
                                    detector=SquareFinder(), rotate="270", log=lambda _m: None, progress=False)
    assert turned.exit_code == 0
    assert turned.report["detection"] == upright.report["detection"] and turned.report["ap50"] == pytest.approx(1.0)
    assert (tmp_path / "b" / "pr_curve.png").is_file()


def test_rotate_refuses_a_detections_file(square_set, tmp_path):
    dets = tmp_path / "d.jsonl"
    dets.write_text("")
    outcome = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "o", detections=dets,
                                     rotate="90", log=lambda _m: None, progress=False, errors=None)
    assert outcome.exit_code == 2 and "--detections" in outcome.report["fatal"]


def test_detect_rotated_reports_unreadable_photos_for_every_setting(square_set):
    records = [ImageAnnotation(square_set / "sq0.png", np.array([[10, 10, 50, 50]]), np.zeros((1, 0, 2)), np.zeros(1, bool)),
               ImageAnnotation(square_set / "missing.png", np.zeros((0, 4)), np.zeros((0, 0, 2)), np.zeros(0, bool))]
    messages = []
    found = detect_rotated(SquareFinder(), records, ("0", "random"), errors=messages.append)
    for name in ("0", "random"):
        pairs, failed, angles = found[name]
        assert len(pairs) == 1 and failed == [str(square_set / "missing.png")] and len(angles) == 2
    assert len(messages) == 1 and "missing.png" in messages[0]


class AngleSquareFinder(SquareFinder):
    """SquareFinder that reports every face at a fixed angle, as a rotation-aware detector would."""

    def __init__(self, angle: float):
        super().__init__()
        self.angle = angle

    def detect(self, images):
        return [Detections(d.boxes, d.scores, d.landmarks, torch.full((len(d),), self.angle)) for d in super().detect(images)]


def test_rotated_report_measures_the_angles_a_detector_gives(square_set, tmp_path):
    # Every face reported at 80 degrees: off by 10 on the photos turned by 90, by 80 upright, by
    # 100 at 180 and by 170 at 270 (= -90). No angles, no figure.
    outcome = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "out",
                                     detector=AngleSquareFinder(80.0), rotate="all", seed=3, batch_size=2,
                                     log=lambda _m: None, progress=False)
    table = outcome.report["rotation"]["settings"]
    for name, err in (("0", 80.0), ("90", 10.0), ("180", 100.0), ("270", 170.0)):
        assert table[name]["angle_error"]["faces"] == 4 and table[name]["angle_error"]["mean"] == pytest.approx(err)
    plain = evaluate_detection_set([square_set / "list.txt"], "list", square_set, out_dir=tmp_path / "plain",
                                   detector=SquareFinder(), rotate="90", batch_size=2, log=lambda _m: None, progress=False)
    assert "angle_error" not in plain.report["rotation"]["settings"]["90"]
