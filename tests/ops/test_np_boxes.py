"""The numpy box library against its torch twin: same names, same results, same empty forms."""

import numpy as np
import pytest
import torch

from mtcnn.ops import boxes as tb
from mtcnn.ops import coding as tc
from mtcnn.ops import np_boxes as nb


def random_boxes(rng, n, degenerate=True):
    xy = rng.uniform(-20, 100, (n, 2))
    wh = rng.uniform(0 if degenerate else 1, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if degenerate and n > 3:
        boxes[0, 2] = boxes[0, 0]  # zero width
        boxes[1, 2:] = boxes[1, :2] - 5  # inverted
    return boxes


def t(x):
    return torch.as_tensor(np.asarray(x, np.float64))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["union", "min"])
def test_overlaps_match(seed, mode):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 30), random_boxes(rng, 17)
    np.testing.assert_allclose(nb.box_iou(a, b, mode), tb.box_iou(t(a), t(b), mode).numpy(), atol=1e-12)
    np.testing.assert_allclose(nb.paired_iou(a, b[:1].repeat(30, 0), mode),
                               tb.paired_iou(t(a), t(b[:1].repeat(30, 0)), mode).numpy(), atol=1e-12)
    np.testing.assert_allclose(nb.box_area(a), tb.box_area(t(a)).numpy())


def test_exact_values_and_empty_forms():
    assert nb.box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10]])[0, 0] == 0.5
    assert nb.box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10]], "min")[0, 0] == 1.0
    assert nb.box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert nb.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert nb.box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0  # two empty boxes: 0, not NaN
    with pytest.raises(ValueError, match="overlap mode"):
        nb.box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], "max")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_matches(seed, threshold, mode):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 60, degenerate=False)
    scores = rng.permutation(60).astype(np.float64)  # distinct: one right order
    expected = tb.nms(t(boxes), t(scores), threshold, mode).numpy()
    np.testing.assert_array_equal(nb.nms(boxes, scores, threshold, mode), expected)


@pytest.mark.parametrize("seed", range(3))
def test_geometry_and_coding_match(seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 25, degenerate=False), random_boxes(rng, 25, degenerate=False)
    np.testing.assert_allclose(nb.square_boxes(a), tb.square_boxes(t(a)).numpy(), atol=1e-12)
    np.testing.assert_allclose(nb.square_boxes(a, 0.3), tb.square_boxes(t(a), 0.3).numpy(), atol=1e-12)
    w, h = rng.uniform(50, 90, 25), rng.uniform(50, 90, 25)
    np.testing.assert_allclose(nb.clip_boxes(a, w, h), tb.clip_boxes(t(a), t(w), t(h)).numpy())
    np.testing.assert_allclose(nb.clip_boxes(a, 64, 48), tb.clip_boxes(t(a), 64, 48).numpy())
    off = nb.encode_boxes(a, b)
    np.testing.assert_allclose(off, tc.encode_boxes(t(a), t(b)).numpy(), atol=1e-12)
    np.testing.assert_allclose(nb.decode_boxes(a, off), b, atol=1e-9)
    pts = rng.uniform(0, 100, (25, 5, 2))
    norm = nb.encode_landmarks(a, pts)
    np.testing.assert_allclose(norm, tc.encode_landmarks(t(a), t(pts)).numpy(), atol=1e-12)
    np.testing.assert_allclose(nb.decode_landmarks(a, norm), pts, atol=1e-9)


def test_flips_match_and_invert():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 1, (7, 10)).astype(np.float32)
    off = rng.uniform(-0.3, 0.3, (7, 4)).astype(np.float32)
    np.testing.assert_array_equal(nb.flip_landmarks(lm), tc.flip_landmarks(torch.from_numpy(lm)).numpy())
    np.testing.assert_array_equal(nb.flip_box_offsets(off), tc.flip_box_offsets(torch.from_numpy(off)).numpy())
    np.testing.assert_allclose(nb.flip_landmarks(nb.flip_landmarks(lm)), lm, atol=1e-7)
    np.testing.assert_array_equal(nb.flip_box_offsets(nb.flip_box_offsets(off)), off)
    # The mirrored left eye is the old right eye: x -> 1 - x of point 1.
    assert nb.flip_landmarks(lm)[0, 0] == pytest.approx(1 - lm[0, 2])


def test_square_boxes_expand_scales_the_side_about_the_centre():
    box = np.array([[10.0, 20.0, 30.0, 60.0]])  # 20 wide, 40 high, centre (20, 40)
    np.testing.assert_allclose(nb.square_boxes(box, 0.1), [[-2, 18, 42, 62]])  # side 40 * 1.1 = 44
    np.testing.assert_allclose(tb.square_boxes(t(box), 0.1).numpy(), [[-2, 18, 42, 62]])
