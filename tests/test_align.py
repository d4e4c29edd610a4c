import math

import cv2
import numpy as np
import pytest
import torch

from mtcnn.align import TEMPLATE_112, alignment_matrices, norm_crop, similarity_transform, template

# One colour per landmark, so each point can be found again in a crop.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], dtype=np.uint8)


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def dotted_face(points: np.ndarray, shape=(480, 640), radius=4) -> np.ndarray:
    """A grey image with a coloured disc at each (continuous-coordinate) landmark."""
    image = np.full((*shape, 3), 90, np.uint8)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    for (x, y), colour in zip(points, COLOURS):
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = colour
    return image


def centroids(crop: np.ndarray) -> np.ndarray:
    """Centre of each colour's disc, in continuous crop coordinates."""
    out = []
    for colour in COLOURS.astype(int):
        dist = np.abs(crop.astype(int) - colour).sum(axis=2)
        weight = np.clip(1.0 - dist / 120.0, 0, None)
        assert weight.sum() > 0, f"colour {colour} not found in the crop"
        yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]] + 0.5
        out.append([(xx * weight).sum() / weight.sum(), (yy * weight).sum() / weight.sum()])
    return np.array(out)


def test_templates_for_the_standard_sizes():
    assert np.allclose(template(112), TEMPLATE_112)
    # The 96×112 template is the 112×112 one without the 8-pixel side margins.
    assert np.allclose(template((96, 112)), TEMPLATE_112 - [8, 0])
    assert np.allclose(template(224), TEMPLATE_112 * 2)


@pytest.mark.parametrize("angle", [-40.0, -12.5, 0.0, 17.0, 90.0, 150.0])
def test_umeyama_recovers_a_known_similarity(angle):
    rng = np.random.default_rng(int(angle) + 100)
    points = rng.uniform(0, 100, (5, 2))
    truth = similarity(angle, 1.7, 33.0, -12.0)
    got = similarity_transform(points, apply(truth, points))
    assert np.allclose(got, truth, atol=1e-9)


def test_umeyama_is_the_least_squares_similarity_and_never_reflects():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 50, (4, 5, 2))
    dst = apply(similarity(20, 0.8, 5, 5), src[0]) + rng.normal(0, 2.0, (5, 2))
    best = similarity_transform(src, dst)  # batched: [4,2,3]
    assert best.shape == (4, 2, 3)
    m = best[0]
    residual = ((apply(m, src[0]) - dst) ** 2).sum()
    # Any nearby similarity (perturbed angle, scale or shift) fits worse.
    scale, angle = math.hypot(m[0, 0], m[1, 0]), math.degrees(math.atan2(m[1, 0], m[0, 0]))
    for d_angle, d_scale, d_t in [(0.5, 0, 0), (-0.5, 0, 0), (0, 0.01, 0), (0, -0.01, 0), (0, 0, 0.3)]:
        other = similarity(angle + d_angle, scale + d_scale, m[0, 2] + d_t, m[1, 2])
        assert ((apply(other, src[0]) - dst) ** 2).sum() > residual
    # Mirrored points: the best similarity is still a rotation (positive determinant).
    mirrored = similarity_transform(src[1] * [-1, 1], src[1])
    assert np.linalg.det(mirrored[:, :2]) > 0


@pytest.mark.parametrize("angle", [-35.0, -10.0, 0.0, 23.0, 60.0])
def test_rotated_face_comes_back_upright_at_the_template(angle):
    # A face drawn at twice the template's size, rotated by `angle`, moved into a big photo.
    truth = similarity(angle, 2.0, 300.0, 140.0)
    points = apply(truth, TEMPLATE_112 - 56.0)
    image = dotted_face(points, radius=6)
    crop = norm_crop(image, points)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    found = centroids(crop)
    eyes = found[1] - found[0]
    assert abs(math.degrees(math.atan2(eyes[1], eyes[0])) - math.degrees(math.atan2(*(TEMPLATE_112[1] - TEMPLATE_112[0])[::-1]))) < 1.0
    assert np.abs(found - TEMPLATE_112).max() < 0.5
    # The transform undoes the known one: scale 1/2, rotation -angle, translation recovered.
    m = alignment_matrices(torch.tensor(points, dtype=torch.float32))[0]
    assert math.hypot(m[0, 0], m[1, 0]) == pytest.approx(0.5, abs=1e-5)
    assert math.degrees(math.atan2(m[1, 0], m[0, 0])) == pytest.approx(-angle, abs=1e-3)
    assert np.allclose(apply(m, np.array([[300.0, 140.0]])), [[56.0, 56.0]], atol=1e-3)


@pytest.mark.parametrize("size", [112, (96, 112), 160, (64, 80)])
def test_template_points_land_where_the_template_says(size):
    points = apply(similarity(-15, 1.3, 320, 250), TEMPLATE_112 - 56.0)
    crop = norm_crop(dotted_face(points, radius=6), points, size=size)
    width, height = (size, size) if isinstance(size, int) else size
    assert crop.shape == (height, width, 3)
    assert np.abs(centroids(crop) - template(size)).max() < 0.6


def test_many_faces_in_one_call_match_one_by_one_and_cv2():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    faces = np.stack([apply(similarity(a, s, x, y), TEMPLATE_112 - 56) for a, s, x, y in [(10, 1.2, 120, 130), (-30, 0.9, 280, 160)]])
    together = norm_crop(image, faces)
    assert together.shape == (2, 112, 112, 3)
    for k in range(2):
        assert np.array_equal(together[k], norm_crop(image, faces[k]))
        # OpenCV's warp puts pixel centres at integer coordinates: shift by half a pixel.
        m = alignment_matrices(faces[k])[0]
        m_cv = m.copy()
        m_cv[:, 2] += m[:, :2].sum(axis=1) * 0.5 - 0.5
        ref = cv2.warpAffine(image, m_cv, (112, 112), flags=cv2.INTER_LINEAR, borderValue=0)
        inner = (slice(2, -2), slice(2, -2))
        assert np.abs(together[k][inner].astype(int) - ref[inner].astype(int)).max() <= 1
    assert norm_crop(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)


def test_bad_arguments_fail_clearly():
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="size"):
        norm_crop(image, TEMPLATE_112, size=0)
    with pytest.raises(ValueError, match="finite"):
        norm_crop(image, np.full((5, 2), np.nan))
