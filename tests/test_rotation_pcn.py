"""MTCNN(rotation="pcn"): the calibrating cascade's geometry against independent references
(np.rot90 pixels, mtcnn.rotation's turn of boxes and points), the upright O-Net crop, the
proposals with a third head, and the detector end to end with untrained nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtcnn.detector import MTCNN
from mtcnn.nets import build_net
from mtcnn.ops.coding import decode_boxes
from mtcnn.ops.crops import crop_resize
from mtcnn.rotation import rotate_face_boxes, rotation_matrix
from mtcnn.rotation import turn_crops
from mtcnn.rotation_pcn import PCNSettings, boxes_from_turned, propose, quarter_turns, upright_landmarks
from mtcnn.stages import run_pnet, run_proposals_with_head
from mtcnn.weights import WeightsError, make_checkpoint


def test_quarter_turns_make_faces_upright():
    # A face at angle a is found upright in the image turned by k with a = -90k (mod 360).
    assert quarter_turns(torch.tensor([0.0, 90.0, 180.0, -90.0, 270.0, -180.0])).tolist() == [0, 3, 2, 1, 1, 2]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_turned_crops_and_boxes_match_the_turned_image(k):
    rng = np.random.default_rng(k)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    box = torch.tensor([[10.0, 6.0, 34.0, 30.0]])  # a 24x24 square, pixel-aligned
    offsets = torch.tensor([[0.1, 0.05, -0.1, 0.2]])
    angle = 90.0 * k
    turned = np.ascontiguousarray(np.rot90(image, k))
    matrix, _, _ = rotation_matrix(angle, 56, 40)
    turned_box = torch.from_numpy(rotate_face_boxes(box.numpy(), matrix, angle)).float()
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous()  # noqa: E731
    # The crop of the turned photo, turned back by the face's quarter turns, is the upright crop
    # (24 px squares read at 24 px: no resampling, so exactly).
    face_angle = torch.tensor([angle])
    crop = crop_resize([t(turned)], turned_box, torch.zeros(1, dtype=torch.long), 24)
    upright = crop_resize([t(image)], box, torch.zeros(1, dtype=torch.long), 24)
    assert torch.equal(turn_crops(crop, quarter_turns(face_angle)), upright)
    # Offsets predicted in the upright crop give, in the turned photo, the turned upright box.
    got = boxes_from_turned(turned_box, offsets, quarter_turns(face_angle))
    expect = rotate_face_boxes(decode_boxes(box, offsets).numpy(), matrix, angle)
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-4)


class BrightestPoint(nn.Module):
    """A stand-in O-Net whose five 'landmarks' are the brightest pixel of its input (fractions)."""

    def forward(self, x, with_landmarks=True):
        n, _, h, w = x.shape
        flat = x.mean(1).reshape(n, -1).argmax(1)
        u = ((flat % w).float() + 0.5) / w
        v = ((flat // w).float() + 0.5) / h
        marks = torch.stack([u, v], 1).repeat(1, 5)
        return torch.zeros(n, 2), torch.zeros(n, 4), marks


@pytest.mark.parametrize("angle", [0.0, 90.0, -135.0, 30.0, 180.0])
def test_upright_landmarks_see_the_face_upright_and_map_back(angle):
    # A dot 20 px 'above' the head of a face at `angle` centred at (100, 90): in the face's own
    # frame it is at (0, -20) from the centre; turned by the angle it lies at
    # (-sin a · 20, -cos a · 20) from the centre in the image.
    side, centre = 80.0, np.array([100.0, 90.0])
    a = math.radians(angle)
    dot = centre + 20 * np.array([-math.sin(a), -math.cos(a)])
    image = torch.zeros((3, 200, 220), dtype=torch.uint8)
    x, y = (int(v) for v in dot)
    image[:, y - 1 : y + 2, x - 1 : x + 2] = 255
    box = torch.tensor([[centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2]])
    seen = {}

    class Recorder(BrightestPoint):
        def forward(self, x, with_landmarks=True):
            seen["crop"] = x
            return super().forward(x, with_landmarks)

    points = upright_landmarks(Recorder(), [image], box, torch.zeros(1, dtype=torch.long), torch.tensor([angle]))
    # Mapped back: the brightest point is the dot, wherever the face turned.
    np.testing.assert_allclose(points[0, 0].numpy(), [x + 0.5, y + 0.5], atol=1.5)
    # And O-Net saw the face upright: the dot above the centre of its 48x48 crop (20/80 of the side up).
    crop = seen["crop"][0].mean(0)
    r, c = divmod(int(crop.argmax()), 48)
    assert abs(c + 0.5 - 24) <= 1.5 and abs(r + 0.5 - (24 - 12)) <= 1.5


class DropThirdHead(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, with_landmarks=False):
        cls, box, _ = self.net(x)
        return cls, box, None


def test_proposals_with_a_third_head_are_run_pnet_s_proposals():
    torch.manual_seed(0)
    net = build_net("pcn1").eval()
    image = torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8)
    settings = dict(min_face_size=20.0, factor=0.709, threshold=0.3)
    cands, flip = run_proposals_with_head(net, [image], **settings)
    plain = run_pnet(DropThirdHead(net), [image], **settings)
    assert len(cands) > 0 and flip.shape == (len(cands), 2)
    assert torch.equal(cands.boxes, plain.boxes) and torch.equal(cands.scores, plain.scores)


class FixedFlip(nn.Module):
    """pcn1 with its flip head replaced: every window's upside-down probability is ``p``."""

    def __init__(self, net, p):
        super().__init__()
        self.net, self.p = net, p

    def forward(self, x, with_landmarks=False):
        cls, box, flip = self.net(x)
        logit = math.log(self.p / (1 - self.p))
        return cls, box, torch.stack([torch.zeros_like(flip[:, 0]), torch.full_like(flip[:, 1], logit)], dim=1)


@pytest.mark.parametrize("p, margin, doubled", [(0.6, 0.0, False), (0.6, 0.2, True), (0.8, 0.2, False), (0.3, 0.25, True)])
def test_unsure_flips_go_to_stage_two_both_ways_up(p, margin, doubled):
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8)
    nets = {"pcn1": FixedFlip(build_net("pcn1").eval(), p)}
    settings = PCNSettings(thresholds=(0.3, 0.5, 0.5), flip_both=margin)
    cands, angles = propose(nets, [image], settings, 20.0, 0.709)
    plain, plain_angles = propose(nets, [image], PCNSettings(thresholds=(0.3, 0.5, 0.5), flip_both=0.0), 20.0, 0.709)
    n = len(plain)
    assert n > 0 and set(plain_angles.tolist()) == {180.0 if p > 0.5 else 0.0}
    # The first n are stage 1's call as before; an unsure window comes again, the other way up.
    assert torch.equal(cands.boxes[:n], plain.boxes) and torch.equal(angles[:n], plain_angles)
    assert len(cands) == (2 * n if doubled else n)
    if doubled:
        assert torch.equal(cands.boxes[n:], plain.boxes) and torch.equal(cands.image_index[n:], plain.image_index)
        assert torch.equal(angles[n:], 180.0 - plain_angles)


def _untrained_pcn(folder):
    folder.mkdir()
    torch.manual_seed(0)
    for name in ("pcn1", "pcn2", "pcn3"):
        torch.save(make_checkpoint(name, build_net(name)), folder / f"{name}.pt")
    return folder


def test_detector_runs_the_calibrating_cascade(tmp_path):
    folder = _untrained_pcn(tmp_path / "pcn")
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    # Untrained nets score near 0.5: low thresholds let windows through every stage.
    det = MTCNN(rotation="pcn", pcn=folder, pcn_thresholds=(0.0, 0.0, 0.0), device="cpu")
    faces = det.detect(image)[0]
    assert len(faces) > 0 and faces.angles is not None and faces.angles.shape == (len(faces),)
    assert faces.landmarks.shape == (len(faces), 5, 2)
    assert bool(((faces.angles > -180) & (faces.angles <= 180)).all())
    none = MTCNN(rotation="pcn", pcn=folder, pcn_thresholds=(1.01, 1.01, 1.01), device="cpu").detect([image, image])
    assert [len(d) for d in none] == [0, 0] and none[0].angles is not None
    assert det.settings["rotation"] == "pcn"


def test_missing_pcn_weights_are_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no rotation-calibrating weights there"):
        MTCNN(rotation="pcn", pcn=tmp_path / "absent", device="cpu")


def test_detect_command_writes_each_face_s_angle(tmp_path):
    import json

    import cv2

    from mtcnn.commands.detect import main as detect_main

    folder = _untrained_pcn(tmp_path / "pcn")
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    out = tmp_path / "faces.jsonl"
    code = detect_main([str(photo), "--rotation", "pcn", "--pcn", str(folder), "--pcn-thresholds", "0", "0", "0",
                        "--json", str(out), "--device", "cpu"])
    assert code == 0
    faces = json.loads(out.read_text().splitlines()[0])["faces"]
    assert faces and all(-180 < f["angle"] <= 180 for f in faces)


def test_mining_writes_turned_negatives_and_resumes(tmp_path):
    import cv2

    from mtcnn.config.data import SourceConfig
    from mtcnn.data.h5 import SampleReader
    from mtcnn.data.rotated_mining import PCNMiningConfig, mine_pcn_negatives

    folder = _untrained_pcn(tmp_path / "pcn")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(2)
    lines = []
    for k in range(3):
        cv2.imwrite(str(tmp_path / "photos" / f"p{k}.png"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
        lines += [f"p{k}.png", "1", "30 20 40 40 0 0 0 0 0 0"]
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    src = SourceConfig(name="synth", format="wider", path=str(tmp_path / "gt.txt"), images_root=str(tmp_path / "photos"))
    for stage, size in (("pcn2", 24), ("pcn3", 48)):
        cfg = PCNMiningConfig(stage=stage, pcn=str(folder), sources=[src], out=str(tmp_path / f"{stage}.h5"),
                              angles_per_photo=2, per_photo=5, thresholds=(0.0, 0.0, 0.0))
        result = mine_pcn_negatives(cfg, progress=False)
        reader = SampleReader(tmp_path / f"{stage}.h5", expected_size=size)
        counts = reader.counts()
        reader.close()
        assert counts["neg"] == result["negatives_this_run"] and 0 < counts["neg"] <= 3 * 2 * 5
        assert counts["pos"] == counts["part"] == 0
        assert mine_pcn_negatives(cfg, progress=False)["negatives_this_run"] == 0  # complete: left as it is


def test_angle_errors_match_faces_and_wrap_around():
    from mtcnn.data.annotations import ImageAnnotation
    from mtcnn.eval.results import ImageResult
    from mtcnn.eval.rotate import angle_errors

    record = ImageAnnotation(path=__import__("pathlib").Path("a.jpg"),
                             boxes=np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32),
                             ignore=np.array([False, False, True]), landmarks=np.zeros((3, 0, 2), np.float32))
    result = ImageResult(
        boxes=np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float64),
        scores=np.array([0.9, 0.95, 0.8, 0.99]), landmarks=np.zeros((4, 5, 2)),
        angles=np.array([100.0, 350.0, -170.0, 0.0]))
    # The photo turned by -5: det 1 (score .95) takes face 0 (error 5, across 360), det 0 finds
    # face 0 taken and face 1 too far; det 2 takes face 1 (error 165); det 3 sits on an ignored face.
    errs = angle_errors([(record, result)], [-5.0])
    np.testing.assert_allclose(sorted(errs), [5.0, 165.0])
    no_angles = ImageResult(result.boxes, result.scores, result.landmarks)
    assert angle_errors([(record, no_angles)], [0.0]).size == 0


def test_evaluate_command_runs_the_calibrating_cascade(tmp_path):
    import json

    import cv2

    from mtcnn.commands.evaluate import main as evaluate_main

    folder = _untrained_pcn(tmp_path / "pcn")
    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(3).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (tmp_path / "list.txt").write_text("a.png 30 20 60 50\n")
    code = evaluate_main(["detection", "--format", "list", "--annotations", str(tmp_path / "list.txt"), "--images", str(tmp_path),
                          "--rotate", "90", "--rotation", "pcn", "--pcn", str(folder), "--pcn-thresholds", "0", "0", "0",
                          "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rotation"]["settings"]["90"]["num_detections"] > 0
