"""Moving a source's five points onto another definition (mtcnn.data.point_definitions) and the
source config's ``point_offsets``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtcnn.config import ConfigError
from mtcnn.config.core import from_dict
from mtcnn.config.data import SourceConfig
from mtcnn.data.point_definitions import (
    face_axes,
    mean_face_frame_residual,
    measure_point_offsets,
    shift_points,
    symmetrise_offsets,
)

# An upright face: eyes 20 px apart, so one eye distance is 20 px.
UPRIGHT = np.array([[[40, 50], [60, 50], [50, 62], [42, 72], [58, 72]]], np.float32)
SYMMETRIC = np.array([[0.0, -0.025], [0.0, -0.025], [0.0, 0.015], [0.011, -0.017], [-0.011, -0.017]])


def _rotate(points: np.ndarray, degrees: float, centre=(50.0, 60.0)) -> np.ndarray:
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return ((points - centre) @ r.T + centre).astype(np.float32)


def _random_faces(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    faces = []
    for _ in range(n):
        scale = rng.uniform(0.5, 4.0)
        face = (UPRIGHT[0] - (50, 60)) * scale + rng.uniform(0, 400, 2)
        faces.append(_rotate(face, rng.uniform(-45, 45), centre=face.mean(0)))
    return np.stack(faces).astype(np.float32)


def test_upright_face_moves_by_hand_computed_pixels():
    out = shift_points(UPRIGHT, SYMMETRIC)
    # x along the eye line (to the image right), y down the face, times the 20 px eye distance
    expected = UPRIGHT[0] + SYMMETRIC * 20
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    assert out[0, 0, 1] == pytest.approx(50 - 0.5)  # eyes 0.025 eye distances up
    assert out[0, 3, 0] == pytest.approx(42 + 0.22)  # mouth corners inwards


def test_axes_follow_the_face_when_it_is_turned():
    ex, ey, d = face_axes(_rotate(UPRIGHT, 90))
    np.testing.assert_allclose(ex[0], [0, 1], atol=1e-6)  # the eye line now points down the image
    np.testing.assert_allclose(ey[0], [-1, 0], atol=1e-6)  # and "down the face" points left
    assert d[0] == pytest.approx(20, rel=1e-6)


@pytest.mark.parametrize("degrees", [-30.0, 17.0, 90.0, 180.0])
def test_shift_commutes_with_rotation(degrees):
    a = _rotate(shift_points(UPRIGHT, SYMMETRIC), degrees)
    b = shift_points(_rotate(UPRIGHT, degrees), SYMMETRIC)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_residual_of_a_shift_is_the_offsets_at_any_size_and_tilt():
    faces = _random_faces(50, seed=1)
    offsets = np.random.default_rng(2).uniform(-0.05, 0.05, (5, 2))
    np.testing.assert_allclose(mean_face_frame_residual(shift_points(faces, offsets), faces), offsets, atol=1e-5)


def test_missing_points_and_faces_without_eyes():
    faces = np.concatenate([UPRIGHT, UPRIGHT]).copy()
    faces[0, 3:] = np.nan  # mouth corners missing: stay missing, the rest moves
    faces[1, 0] = np.nan  # no left eye: no frame, the face is left as it is
    out = shift_points(faces, SYMMETRIC)
    assert np.isnan(out[0, 3:]).all()
    np.testing.assert_allclose(out[0, :3], UPRIGHT[0, :3] + SYMMETRIC[:3] * 20, atol=1e-5)
    np.testing.assert_array_equal(out[1], faces[1])


def test_symmetrise_keeps_symmetric_offsets_and_averages_the_rest():
    np.testing.assert_allclose(symmetrise_offsets(SYMMETRIC), SYMMETRIC, atol=1e-12)
    one_sided = np.zeros((5, 2))
    one_sided[0] = (0.02, -0.04)  # only the left eye
    out = symmetrise_offsets(one_sided)
    np.testing.assert_allclose(out[0], (0.01, -0.02))
    np.testing.assert_allclose(out[1], (-0.01, -0.02))  # mirrored: x changes sign
    assert np.all(out[2:] == 0)


def test_measured_offsets_recover_a_definition_difference_despite_the_models_bias():
    """A reference model sees the true features with a bias of its own; the source annotates them
    ``definition`` off. Measuring gives back the offsets that undo the definition."""
    rng = np.random.default_rng(3)
    bias = rng.uniform(-0.02, 0.02, (5, 2))
    own_faces = _random_faces(200, seed=4)
    source_faces = _random_faces(300, seed=5)
    source_annotated = shift_points(source_faces, -SYMMETRIC)  # annotated off the reference's definition
    predicted_own = shift_points(own_faces, bias)
    predicted_source = shift_points(source_faces, bias)
    measured = measure_point_offsets(predicted_source, source_annotated, predicted_own, own_faces)
    # first order: the frames of the annotated and true points differ by the small offsets
    np.testing.assert_allclose(measured, SYMMETRIC, atol=2e-3)
    np.testing.assert_allclose(shift_points(source_annotated, measured), source_faces, atol=0.02 * 80)


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(ValueError, match=r"5 \(x, y\) offsets"):
        shift_points(UPRIGHT, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[M, 5, 2\] points"):
        shift_points(np.zeros((1, 68, 2)), SYMMETRIC)


def test_source_config_checks_point_offsets():
    ok = from_dict(SourceConfig, {"name": "w", "format": "pts68", "points": "five", "point_offsets": SYMMETRIC.tolist()})
    assert len(ok.point_offsets) == 5
    with pytest.raises(ConfigError, match="point_offsets needs 5"):
        from_dict(SourceConfig, {"name": "w", "format": "pts68", "points": "five", "point_offsets": [[0, 0]] * 4})
    with pytest.raises(ConfigError, match="set points: five"):
        from_dict(SourceConfig, {"name": "w", "format": "pts68", "point_offsets": SYMMETRIC.tolist()})
    with pytest.raises(ConfigError, match="must have 2 elements"):
        from_dict(SourceConfig, {"name": "w", "format": "pts68", "points": "five", "point_offsets": [[0, 0, 0]] * 5})


class _LookupONet:
    """Stands in for an O-Net: each crop's first pixel is its index, its points are looked up."""

    def __init__(self, points: np.ndarray):
        self.points = points

    def eval(self):
        return self

    def __call__(self, x):
        import torch

        index = torch.round(x[:, 0, 0, 0] * 128 + 127.5).long().numpy()
        return None, None, torch.from_numpy(self.points[index].reshape(-1, 10).astype(np.float32))


def test_offsets_from_an_onet_samples_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    from mtcnn.data.point_definitions import offsets_from_samples
    from mtcnn.errors import DataError

    # crops' points in crop units (0..1): faces a fifth of the crop wide, turned up to 45 degrees
    faces = _random_faces(200, seed=6) / 500.0 + 0.1
    bias = np.random.default_rng(7).uniform(-0.01, 0.01, (5, 2))
    own, other = faces[:120], faces[120:]
    targets = np.concatenate([own, shift_points(other, -SYMMETRIC)])
    predicted = np.concatenate([shift_points(own, bias), shift_points(other, bias)])
    images = np.zeros((200, 48, 48, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(200)
    path = tmp_path / "onet_train.h5"
    with h5py.File(path, "w") as f:
        f["sources"] = np.array([b"/d/cnn_facepoint/a.jpg", b"/d/300w/b.jpg"], dtype=object)
        g = f.create_group("landmark")
        g["images"] = images
        g["landmark"] = targets.reshape(-1, 10)
        g["source"] = np.array([0] * 120 + [1] * 80, np.int32)
    result = offsets_from_samples(_LookupONet(predicted), str(path), "*/cnn_facepoint/*", {"300w": "*/300w/*"})
    assert result["300w"]["faces"] == 80 and result["300w"]["reference_faces"] == 120
    np.testing.assert_allclose(result["300w"]["offsets"], SYMMETRIC, atol=2e-3)
    with pytest.raises(DataError, match=r"no landmark crop's source matches '\*/afw/\*' \(source 'afw'\)"):
        offsets_from_samples(_LookupONet(predicted), str(path), "*/cnn_facepoint/*", {"afw": "*/afw/*"})
    empty = tmp_path / "rnet_train.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("pos")
    with pytest.raises(DataError, match="no landmark samples"):
        offsets_from_samples(_LookupONet(predicted), str(empty), "*", {"x": "*"})
