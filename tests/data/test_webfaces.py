"""Caltech WebFaces reader and the 4-point -> box mapping fitted on CNN_FacePoint."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from mtcnn.data.annotations import AnnotationError, read_annotations, read_cnn_facepoint, split_by_name
from mtcnn.config.paths import webfaces_root
from mtcnn.data.webfaces import PointsToBox, box_fit_report, points5_to_points4, read_webfaces


def _random_points4(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(50, 300, (n, 1, 2))
    scale = rng.uniform(10, 60, (n, 1, 1))
    template = np.array([[-0.5, -0.4], [0.5, -0.4], [0.0, 0.05], [0.0, 0.45]])
    return centre + scale * (template + rng.normal(0, 0.05, (n, 4, 2)))


def test_fit_recovers_a_known_mapping_exactly():
    truth = PointsToBox(0.3, 0.2, 0.25, 1.1, 0.9, 1.2, 1.05)
    points = _random_points4(500)
    fitted = PointsToBox.fit(points, truth(points).astype(np.float64))
    np.testing.assert_allclose(astuple(fitted), astuple(truth), atol=1e-4)


def test_mapping_is_equivariant_to_translation_and_scale():
    mapping = PointsToBox()
    points = _random_points4(20, seed=1)
    moved = mapping(points * 2.0 + np.array([7.0, -3.0]))
    np.testing.assert_allclose(moved, mapping(points) * 2.0 + np.array([7.0, -3.0, 7.0, -3.0]), rtol=1e-5, atol=1e-3)


def test_points5_to_points4_takes_the_mouth_centre():
    five = np.array([[[0, 0], [10, 0], [5, 5], [2, 10], [8, 12]]], np.float64)
    np.testing.assert_array_equal(points5_to_points4(five)[0, 3], [5, 11])
    np.testing.assert_array_equal(points5_to_points4(five)[0, :3], five[0, :3])


def test_reader_groups_faces_by_image_in_file_order(tmp_path: Path):
    gt = tmp_path / "WebFaces_GroundThruth.txt"
    gt.write_text(
        "pic00002.jpg 10 10 20 10 15 15 15 20 \n"
        "pic00001.jpg 1.0e+02 5.0e+01 1.2e+02 5.0e+01 1.1e+02 6.0e+01 1.1e+02 7.0e+01 \n"
        "pic00002.jpg 40 40 60 40 50 50 50 60 \n"
    )
    records = read_annotations(gt, "webfaces")
    assert [r.path.name for r in records] == ["pic00002.jpg", "pic00001.jpg"]
    assert records[0].path.parent == tmp_path / "Caltech_WebFaces"
    assert records[0].num_faces == 2 and records[1].num_faces == 1
    np.testing.assert_array_equal(records[0].attributes["points4"][1], [[40, 40], [60, 40], [50, 50], [50, 60]])
    np.testing.assert_allclose(records[0].boxes, PointsToBox()(records[0].attributes["points4"]), rtol=1e-6)
    assert records[0].num_landmarks == 0  # no mouth corners: detection only


@pytest.mark.parametrize("line, problem", [("pic1.jpg 1 2 3\n", "9 values"), ("pic1.jpg 1 2 3 4 5 6 7 x\n", ":2: points: .x. is not a number")])
def test_reader_names_the_file_and_the_problem(tmp_path: Path, line: str, problem: str):
    gt = tmp_path / "gt.txt"
    gt.write_text("pic0.jpg 1 2 3 4 5 6 7 8\n" + line)
    with pytest.raises(AnnotationError, match=problem) as info:
        read_webfaces(gt)
    assert str(gt) in str(info.value)


@pytest.mark.data
def test_default_mapping_is_the_cnn_facepoint_fit(shared_data: Path):
    lists = shared_data / "cnn_facepoint"
    train = read_cnn_facepoint(lists / "trainImageList.txt")
    points = points5_to_points4(np.concatenate([r.landmarks for r in train]))
    fitted = PointsToBox.fit(points, np.concatenate([r.boxes for r in train]))
    np.testing.assert_allclose(astuple(fitted), astuple(PointsToBox()), atol=2e-4)
    test = read_cnn_facepoint(lists / "testImageList.txt")
    report = box_fit_report(
        PointsToBox(), points5_to_points4(np.concatenate([r.landmarks for r in test])), np.concatenate([r.boxes for r in test])
    )
    assert report["faces"] == 3466
    assert report["iou_mean"] == pytest.approx(0.824, abs=0.002)
    assert report["fraction_iou_ge_0.65"] == pytest.approx(0.962, abs=0.002)


@pytest.mark.data
def test_real_webfaces_counts_and_split():
    gt = webfaces_root() / "WebFaces_GroundThruth.txt"
    if not gt.is_file():
        pytest.skip(f"Caltech WebFaces not found at {gt.parent} (set MTCNN_WEBFACES; see README)")
    records = read_webfaces(gt)
    assert len(records) == 7092
    assert sum(r.num_faces for r in records) == 10524
    train, val = split_by_name(records, "train"), split_by_name(records, "val")
    assert len(train) == 5673 and len(val) == 1419
    assert max(r.path.name for r in train) < min(r.path.name for r in val)
    assert all(r.path.is_file() for r in records[:50])
