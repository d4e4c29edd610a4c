"""In-memory face crops: reference boxes, the reference frame round trip, and crops against painted dots."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtcnn.data.annotations import ImageAnnotation
from mtcnn.data.face_crops import crop_faces, from_reference, points_extent, square_boxes, to_reference


def test_square_boxes_and_reference_frame_round_trip():
    boxes = np.array([[10, 20, 30, 60]], np.float32)  # 20 wide, 40 high
    sq = square_boxes(boxes, 0.1)
    np.testing.assert_allclose(sq, [[-2, 18, 42, 62]])  # side 40 * 1.1 = 44 around (20, 40)
    pts = np.array([[[-2, 18], [42, 62], [20, 40]]], np.float32)
    ref = to_reference(pts, sq)
    np.testing.assert_allclose(ref, [[[-1, -1], [1, 1], [0, 0]]], atol=1e-6)
    np.testing.assert_allclose(from_reference(ref, sq), pts, atol=1e-4)
    np.testing.assert_allclose(points_extent(pts), [[-2, 18, 42, 62]])


def test_crop_faces_puts_painted_points_where_the_frame_says(tmp_path):
    rng = np.random.default_rng(3)
    image = np.zeros((200, 240, 3), np.uint8)
    pts = rng.uniform(60, 150, (5, 2)).astype(np.float32)
    for x, y in pts:
        cv2.circle(image, (int(x), int(y)), 2, (255, 255, 255), -1)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    # the painted disc's centre in continuous pixel coordinates (crop_resize: pixel k spans [k, k+1))
    centres = np.floor(pts) + 0.5
    rec = ImageAnnotation(path, np.array([[50, 50, 160, 160]], np.float32), centres[None], np.zeros(1, bool))
    crops = crop_faces([rec], size=160, context=1.6, reference="box", expand=0.0)
    assert crops.images.shape == (1, 3, 160, 160) and crops.num_landmarks == 5
    np.testing.assert_allclose(crops.ref_boxes, [[50, 50, 160, 160]])
    grey = crops.images[0, 0].float().numpy()
    for x, y in crops.points[0].numpy():
        px, py = (x / 1.6 + 1) * 80, (y / 1.6 + 1) * 80  # stored crop pixels
        win = grey[int(py) - 4 : int(py) + 5, int(px) - 4 : int(px) + 5]
        ys, xs = np.nonzero(win > 40)
        w = win[ys, xs]
        cx = (xs + int(px) - 4 + 0.5) @ w / w.sum()
        cy = (ys + int(py) - 4 + 0.5) @ w / w.sum()
        assert abs(cx - px) < 0.5 and abs(cy - py) < 0.5
    grey_crops = crop_faces([rec], size=32, context=1.6, reference="points", expand=0.1, grey=True)
    assert grey_crops.images.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(np.abs(grey_crops.points.numpy()).max(), 1 / 1.1, rtol=1e-5)


def test_crop_faces_refuses_missing_points(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((20, 20, 3), np.uint8))
    pts = np.full((1, 5, 2), np.nan, np.float32)
    rec = ImageAnnotation(path, np.array([[2, 2, 12, 12]], np.float32), pts, np.zeros(1, bool))
    with pytest.raises(ValueError, match="a.png"):
        crop_faces([rec], 16, 1.6, "box")
