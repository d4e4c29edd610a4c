"""The detector with another landmark model: --landmarks mobilenet / 68 / a weights file."""

from __future__ import annotations

import json

import pytest
import torch

from mtcnn.commands.detect import main as detect_main
from mtcnn.detector import MTCNN
from mtcnn.io import read_image_rgb
from mtcnn.landmark_models import save_landmark_weights
from mtcnn.nets import build_net
from mtcnn.structures import Detections


@pytest.fixture(scope="module")
def kp68_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lm") / "kp68.pt"
    save_landmark_weights(path, {"kp68_compact": build_net("kp68_compact")}, "single")
    return path


@pytest.fixture(scope="module")
def cascade_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lm") / "cascade.pt"
    save_landmark_weights(path, {n: build_net(n) for n in ("mobilenet_l1", "mobilenet_l2")}, "mobilenet_cascade")
    return path


def test_detections_take_any_number_of_points():
    d = Detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 68, 2))
    assert len(d.to_records()[0]["landmarks"]) == 68
    assert Detections.empty(num_landmarks=68).landmarks.shape == (0, 68, 2)
    with pytest.raises(ValueError, match=r"\[N,K,2\]"):
        Detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 68))


@pytest.mark.weights
@pytest.mark.data
def test_detector_points_come_from_the_landmark_model(original_weights, shared_data, kp68_weights, cascade_weights):
    image = read_image_rgb(sorted((shared_data / "dlib_faces").glob("*.jpg"))[0])
    base = MTCNN(weights=original_weights, device="cpu")
    faces = base.detect(image)[0]
    assert len(faces) > 0 and faces.landmarks.shape[1] == 5
    dense = base.with_landmarks(str(kp68_weights)).detect(image)[0]
    assert dense.landmarks.shape == (len(faces), 68, 2)
    assert torch.equal(dense.boxes, faces.boxes)  # the boxes are O-Net's either way
    # an untrained model still places its points around each face (the windows are the faces)
    centre = (faces.boxes[:, None, :2] + faces.boxes[:, None, 2:]) / 2
    side = (faces.boxes[:, 2] - faces.boxes[:, 0])[:, None, None]
    assert ((dense.landmarks - centre).abs() < 2 * side).all()
    five = MTCNN(weights=original_weights, device="cpu", landmarks=str(cascade_weights)).detect(image)[0]
    assert five.landmarks.shape == (len(faces), 5, 2) and not torch.equal(five.landmarks, faces.landmarks)
    assert base.with_landmarks(str(kp68_weights)).settings["landmarks"] == str(kp68_weights)


@pytest.mark.weights
@pytest.mark.data
def test_detect_cli_draws_68_points(original_weights, shared_data, kp68_weights, tmp_path):
    image = sorted((shared_data / "dlib_faces").glob("*.jpg"))[0]
    out = tmp_path / "faces.jsonl"
    code = detect_main([str(image), "--weights", str(original_weights), "--landmarks", str(kp68_weights),
                        "--json", str(out), "--save-dir", str(tmp_path / "drawn"), "--device", "cpu"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["faces"] and all(len(f["landmarks"]) == 68 for f in record["faces"])
    assert len(list((tmp_path / "drawn").iterdir())) == 1


@pytest.mark.weights
def test_missing_landmark_weights_are_one_line(original_weights, tmp_path, capsys):
    code = detect_main([str(tmp_path / "x.jpg"), "--landmarks", str(tmp_path / "none.pt"), "--device", "cpu",
                        "--weights", str(original_weights)])
    assert code == 1  # a missing input file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "none.pt: landmark weights not found" in err[0]


@pytest.mark.weights
@pytest.mark.data
def test_68_points_from_detector_boxes_are_matched_and_scored(original_weights, shared_data, kp68_weights):
    from mtcnn.data.face_crops import udacity68_crops
    from mtcnn.eval.zoo import evaluate_kp68_with_detector

    test = udacity68_crops(shared_data, "test", 104, limit=4)
    detector = MTCNN(weights=original_weights, device="cpu")
    result = evaluate_kp68_with_detector(kp68_weights, detector, test, passes=2)
    assert result["faces"] == 4 and 3 <= result["matched"] <= 4  # frontal video frames: found
    assert 0 < result["nme"] < 10 and result["passes"] == 2
