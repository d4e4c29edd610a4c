"""``MTCNN(rotation="quarter")`` (mtcnn.rotation.detect_quarter): the four quarter turns in one
call, boxes and points mapped back exactly, merged by NMS, each face with its angle; the default
detector unchanged; aligned crops of turned faces upright.

The mapping is checked exactly, against formulas written out here and with a stand-in cascade that
finds a synthetic mark in every turn; the shipped detector on a real face photo turned by each
quarter turn.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from mtcnn import MTCNN
from mtcnn.align import norm_crop
from mtcnn.detector import split_by_image
from mtcnn.rotation import detect_quarter, from_quarter_turn
from mtcnn.stages import Candidates
from mtcnn.structures import image_record

FACE_FILE = "Abbas_Kiarostami_0001.jpg"


def turn_by_hand(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Where np.rot90(image, k) puts a point of a width × height image (continuous coordinates)."""
    x, y = points[..., 0], points[..., 1]
    return np.stack({0: (x, y), 1: (y, width - x), 2: (width - x, height - y), 3: (height - y, x)}[k], axis=-1)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_points_and_boxes_map_back_exactly(k):
    width, height = 57, 31
    rng = np.random.default_rng(k)
    # Points on a 1/8-pixel grid: every formula below is exact in float32.
    points = rng.integers(0, 8 * 31, (40, 5, 2)) / 8.0
    in_view = turn_by_hand(points, k, width, height)
    n = points.shape[0]
    back = from_quarter_turn(torch.tensor(in_view, dtype=torch.float32), torch.full((n,), k),
                             torch.full((n,), width), torch.full((n,), height))
    assert torch.equal(back, torch.tensor(points, dtype=torch.float32))
    # A box found in the view maps back to the box of the mapped corners.
    boxes = np.concatenate([points[:, 0], points[:, 0] + rng.integers(1, 80, (n, 2)) / 8.0], axis=1)
    corners = turn_by_hand(boxes.reshape(n, 2, 2), k, width, height)
    view_boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    mapped = from_quarter_turn(torch.tensor(view_boxes.reshape(n, 2, 2), dtype=torch.float32), torch.full((n,), k),
                               torch.full((n,), width), torch.full((n,), height))
    got = torch.cat([mapped.amin(dim=1), mapped.amax(dim=1)], dim=1)
    assert torch.equal(got, torch.tensor(boxes, dtype=torch.float32))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_torch_and_numpy_quarter_turns_agree(k):
    image = np.random.default_rng(k).integers(0, 256, (13, 21, 3), dtype=np.uint8)
    turned = torch.rot90(torch.from_numpy(image).permute(2, 0, 1), k, dims=(1, 2)).permute(1, 2, 0).numpy()
    assert np.array_equal(turned, np.rot90(image, k))


class MarkFinder:
    """A stand-in cascade: in each image it finds the bright square (its box) and the five
    coloured dots (the points, in the square's own order), scored by how upright the mark is:
    1.0 when the red dot is top-left, less in the other turns (all pass)."""

    def __init__(self, config):
        self.config = config

    def candidates(self, tensors):
        boxes, scores, index, marks = [], [], [], []
        for i, t in enumerate(tensors):
            image = t.permute(1, 2, 0).numpy()
            ys, xs = np.nonzero(image.sum(axis=2) > 0)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            points = []
            for colour in COLOURS:
                yy, xx = np.nonzero((image == colour).all(axis=2))
                points.append([xx.mean() + 0.5, yy.mean() + 0.5])
            red = points[0]
            top_left = int(red[0] - box[0] < box[2] - red[0]) + int(red[1] - box[1] < box[3] - red[1])
            boxes.append(box)
            scores.append(0.5 + 0.25 * top_left)
            index.append(i)
            marks.append(points)
        return Candidates(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(index),
                          torch.tensor(marks, dtype=torch.float32))


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)


def marked_image(k: int) -> np.ndarray:
    """A 50 × 70 image with a grey 22 × 30 "face" at (12, 9) and five dots, turned by k."""
    image = np.zeros((50, 70, 3), np.uint8)
    image[9:39, 12:34] = 128
    for (x, y), colour in zip([(15, 13), (29, 13), (22, 22), (16, 31), (28, 31)], COLOURS):
        image[y : y + 2, x : x + 2] = colour
    return np.ascontiguousarray(np.rot90(image, k))


def test_the_upright_turn_wins_and_maps_back_to_the_upright_box():
    from mtcnn.config import DetectorConfig

    finder = MarkFinder(DetectorConfig())
    upright = finder.candidates([torch.from_numpy(marked_image(0)).permute(2, 0, 1)])
    images = [marked_image(k) for k in range(4)]
    found = detect_quarter(finder, [torch.from_numpy(im).permute(2, 0, 1) for im in images])
    for k, faces in enumerate(found):
        # The four turns find the same mark; NMS keeps one: the turn that made it upright.
        assert len(faces) == 1 and faces.scores.item() == 1.0
        assert faces.angles.tolist() == [90.0 * k]
        h, w = images[k].shape[:2]
        # The box and points of the upright image, turned as the image was (exactly).
        box = turn_by_hand(upright.boxes.numpy().reshape(2, 2), k, 70, 50)
        assert torch.equal(faces.boxes[0], torch.tensor(np.concatenate([box.min(0), box.max(0)]), dtype=torch.float32))
        assert torch.equal(faces.landmarks[0], torch.tensor(turn_by_hand(upright.landmarks[0].numpy(), k, 70, 50)))


# --------------------------------------------------------------------------------------------
# the shipped detector on a real face
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_photo(shared_data):
    path = shared_data / "cnn_facepoint" / "lfw_5590" / FACE_FILE
    if not path.is_file():
        pytest.skip(f"needs {path}")
    face = cv2.resize(cv2.imread(str(path))[40:210, 40:210, ::-1], (150, 150), interpolation=cv2.INTER_AREA)
    image = np.full((240, 320, 3), 110, np.uint8)
    image[30:180, 70:220] = face
    return image


@pytest.fixture(scope="module")
def detectors():
    return MTCNN(device="cpu"), MTCNN(device="cpu", rotation="quarter")


def test_default_is_unchanged_byte_for_byte(face_photo, detectors):
    default, quarter = detectors
    images = [face_photo, np.ascontiguousarray(face_photo[::2, ::2])]
    got = default.detect(images)
    none = MTCNN(device="cpu", rotation=None).detect(images)
    # The path before rotation existed: the cascade, then split_by_image.
    tensors = [torch.from_numpy(im).permute(2, 0, 1) for im in images]
    before = split_by_image(default.candidates(tensors), len(images))
    for a, b, c in zip(got, none, before):
        assert a.angles is None and b.angles is None
        for field in ("boxes", "scores", "landmarks"):
            assert torch.equal(getattr(a, field), getattr(c, field)) and torch.equal(getattr(b, field), getattr(c, field))
        assert json.dumps(image_record("x.jpg", 320, 240, a)) == json.dumps(image_record("x.jpg", 320, 240, c))
        assert "angle" not in json.dumps(a.to_records())
    assert "rotation" not in default.settings and quarter.settings["rotation"] == "quarter"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_finds_a_turned_face_with_its_angle_and_box(face_photo, detectors, k):
    default, quarter = detectors
    upright = default.detect(face_photo)[0]
    assert len(upright) == 1
    turned = np.ascontiguousarray(np.rot90(face_photo, k))
    faces = quarter.detect(turned)[0]
    assert len(faces) == 1 and faces.angles.tolist() == [90.0 * k]
    # Its turn k' = 4 - k is the upright photo, pixel for pixel: the same face, mapped exactly
    # (up to the float rounding of a different canvas packing).
    box = turn_by_hand(upright.boxes.numpy().reshape(2, 2), k, 320, 240)
    expected = np.concatenate([box.min(0), box.max(0)])
    assert np.allclose(faces.boxes[0].numpy(), expected, atol=0.05)
    assert np.allclose(faces.landmarks[0].numpy(), turn_by_hand(upright.landmarks[0].numpy(), k, 320, 240), atol=0.05)
    assert np.isclose(faces.scores.item(), upright.scores.item(), atol=1e-4)
    # The aligned crop of the turned face is the upright face's crop.
    crop_upright = norm_crop(face_photo, upright.landmarks[0]).astype(int)
    crop_turned = norm_crop(turned, faces.landmarks[0]).astype(int)
    assert np.abs(crop_turned - crop_upright).mean() < 0.5 and np.abs(crop_turned - crop_upright).max() <= 8


def test_quarter_on_an_upright_photo_finds_the_upright_face_once(face_photo, detectors):
    default, quarter = detectors
    upright = default.detect(face_photo)[0]
    faces = quarter.detect([face_photo, np.zeros((40, 40, 3), np.uint8)])
    assert len(faces[0]) == 1 and faces[0].angles.tolist() == [0.0]
    assert torch.allclose(faces[0].boxes, upright.boxes, atol=0.05)
    assert len(faces[1]) == 0 and faces[1].angles.shape == (0,) and faces[1].landmarks.shape == (0, 5, 2)
    assert faces[0].to_records()[0]["angle"] == 0.0


def test_unknown_rotation_is_refused():
    with pytest.raises(ValueError, match="rotation"):
        MTCNN(device="cpu", rotation="any")


def test_detect_cli_writes_angles_and_upright_crops(face_photo, detectors, tmp_path):
    from mtcnn.commands.detect import main as detect_main

    turned = np.ascontiguousarray(np.rot90(face_photo, 1))
    cv2.imwrite(str(tmp_path / "turned.png"), turned[:, :, ::-1])
    code = detect_main([str(tmp_path / "turned.png"), "--rotation", "quarter", "--device", "cpu",
                        "--json", str(tmp_path / "out.jsonl"), "--crops", str(tmp_path / "crops")])
    assert code == 0
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert [f["angle"] for f in record["faces"]] == [90.0]
    crop = cv2.imread(str(tmp_path / "crops" / "turned_0.png"))[:, :, ::-1].astype(int)
    upright = norm_crop(face_photo, detectors[0].detect(face_photo)[0].landmarks[0]).astype(int)
    assert np.abs(crop - upright).mean() < 1.0
