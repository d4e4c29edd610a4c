"""The rotation-calibrating cascade's training samples and task (mtcnn.data.rotated_faces,
mtcnn.training.rotation_task): turned windows against an independent rotation of a marker, IoU
labels and box offsets against the face box, orientation targets at their edges, a resumable
loader, and short training runs of the three stages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mtcnn.data.rotated_faces import IGNORE, FaceCanvases, RotatedBatchLoader, WindowJitter, generator, sample_face_windows
from mtcnn.nets import get_net_spec
from mtcnn.ops.coding import decode_boxes
from mtcnn.structures import Label
from mtcnn.training.rotation_task import PCNTask, PCNTrainConfig, orientation_targets, pcn_loss
from mtcnn.weights import load_stage_net

S = 96
BOX = (24.0, 24.0, 72.0, 72.0)  # the face box on every canvas: 48 px, centred


def _marker_canvases(n: int, dot: tuple[int, int]) -> FaceCanvases:
    """Dark canvases with one bright 2×2 dot at ``dot`` (x, y pixel of its top-left)."""
    c = torch.zeros((n, 3, S, S), dtype=torch.uint8)
    x, y = dot
    c[:, :, y : y + 2, x : x + 2] = 255
    return FaceCanvases(c, torch.tensor([BOX] * n), tuple(f"f{k}" for k in range(n)))


def _peak(crop: torch.Tensor) -> np.ndarray:
    """(x, y) of the brightness centroid of a normalised crop [3, s, s] (continuous pixels)."""
    img = crop.float().mean(0) + 1.0  # -1 (black) .. 1 (white) -> 0 .. 2
    img = torch.where(img > 0.5, img, torch.zeros_like(img))
    ys, xs = torch.meshgrid(torch.arange(img.shape[0]) + 0.5, torch.arange(img.shape[1]) + 0.5, indexing="ij")
    w = img.sum()
    return np.array([float((img * xs).sum() / w), float((img * ys).sum() / w)])


@pytest.mark.parametrize("mirror", [False, True])
def test_windows_show_the_face_turned_by_the_label_angle(mirror):
    # The dot sits 16 px above the face centre (the top of the head). In a window turned by θ it
    # must appear where the independent turn of rotation.rotation_matrix puts it:
    # (dx, dy) -> (cos·dx + sin·dy, -sin·dx + cos·dy), then mirrored when the window is.
    data = _marker_canvases(64, (47, 31))
    centre = np.array([48.0, 48.0])
    dot = np.array([48.0, 32.0])
    out = sample_face_windows(data, torch.arange(64), 48, 180.0, generator(0, 1), WindowJitter(shift=0.1, scale=1.1),
                              mirror=mirror)
    assert bool(out["mirrored"].any()) == mirror
    for k in range(64):
        mirrored = bool(out["mirrored"][k])
        # A mirrored window shows the face turned by θ, then mirrored: its label is -θ.
        theta = math.radians(float(out["angle"][k]) * (-1 if mirrored else 1))
        d = dot - centre
        turned = centre + np.array([math.cos(theta) * d[0] + math.sin(theta) * d[1], -math.sin(theta) * d[0] + math.cos(theta) * d[1]])
        x1, y1, x2, y2 = out["window"][k].tolist()
        expect = (turned - [x1, y1]) / (x2 - x1) * 48
        if mirrored:
            expect[0] = 48 - expect[0]
            # and the box offsets are the unmirrored ones with x swapped and negated
            plain = ((data.boxes[k] - out["window"][k]) / (x2 - x1)).tolist()
            np.testing.assert_allclose(out["bbox"][k].tolist(), [-plain[2], plain[1], -plain[0], plain[3]], atol=1e-5)
        np.testing.assert_allclose(_peak(out["images"][k]), expect, atol=1.0)


def test_labels_follow_the_iou_rules_and_offsets_decode_to_the_face_box():
    data = _marker_canvases(400, (10, 10))
    out = sample_face_windows(data, torch.arange(400), 24, 90.0, generator(0, 2), WindowJitter(shift=0.3, scale=1.4), mirror=False)
    iou, label = out["iou"], out["label"]
    assert torch.equal(label == int(Label.POS), iou >= 0.65)
    assert torch.equal(label == int(Label.PART), (iou >= 0.4) & (iou < 0.65))
    assert torch.equal(label == IGNORE, iou < 0.4)
    assert {int(v) for v in label.unique()} == {int(Label.POS), int(Label.PART), IGNORE}
    decoded = decode_boxes(out["window"], out["bbox"])
    torch.testing.assert_close(decoded, data.boxes, atol=1e-4, rtol=0)
    assert out["angle"].abs().max() <= 90.0 and out["angle"].abs().max() > 80.0


def test_orientation_targets_at_their_edges():
    a = torch.tensor([0.0, 89.9, 90.0, -90.0, -89.9, 179.0, -180.0])
    assert orientation_targets("pcn1", a).tolist() == [0, 0, 1, 1, 0, 1, 1]
    b = torch.tensor([-90.0, -46.0, -44.0, 0.0, 44.0, 46.0, 90.0])
    assert orientation_targets("pcn2", b).tolist() == [0, 0, 1, 1, 1, 2, 2]
    c = torch.tensor([-45.0, 0.0, 22.5])
    torch.testing.assert_close(orientation_targets("pcn3", c), torch.tensor([-1.0, 0.0, 0.5]))


def test_loader_is_a_pure_function_of_epoch_and_step():
    data = _marker_canvases(16, (30, 30))
    negs = torch.randint(0, 255, (40, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loader = RotatedBatchLoader(data, negs, 24, 90.0, 6, 10, steps=3, seed=5, jitter=WindowJitter())
    first = list(loader)
    assert loader.state_dict() == {"epoch": 1, "step": 0}
    again = RotatedBatchLoader(data, negs, 24, 90.0, 6, 10, steps=3, seed=5, jitter=WindowJitter())
    again.load_state_dict({"epoch": 0, "step": 2})
    (third,) = list(again)
    for key in first[2]:
        assert torch.equal(first[2][key].nan_to_num(), third[key].nan_to_num()), key
    assert first[0]["images"].shape == (16, 3, 24, 24)
    assert (first[0]["label"][6:] == int(Label.NEG)).all() and first[0]["angle"][6:].isnan().all()


def test_loss_masks_orientation_and_box_to_faces():
    net = "pcn2"
    batch = {"label": torch.tensor([1, -1, 0, IGNORE]), "bbox": torch.zeros(4, 4),
             "angle": torch.tensor([0.0, 80.0, float("nan"), 10.0])}
    cls = torch.tensor([[0.0, 5.0], [0.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    box = torch.zeros(4, 4)
    box[2:] = 9.0  # a negative's and an ignored window's boxes never count
    orient = torch.zeros(4, 3)
    orient[0, 1] = orient[1, 2] = 20.0  # both faces right
    orient[3, 0] = 20.0  # the ignored window wrong: no loss
    total, parts = pcn_loss(net, (cls, box, orient), batch, PCNTrainConfig().weights, 1.0)
    assert float(parts["box"]) == 0.0 and float(parts["orient"]) < 1e-6
    assert float(parts["cls"]) < 0.01


def _synthetic_faces(n: int, seed: int) -> FaceCanvases:
    """Bright ovals with two dark eyes above centre on noise: an oriented 'face'."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 60, (n, S, S, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:S, 0:S]
    face = ((xx - 48) / 22.0) ** 2 + ((yy - 48) / 26.0) ** 2 <= 1
    c[:, face] = 200
    for ex in (39, 57):
        c[:, 38:44, ex - 3 : ex + 3] = 20
    c[:, 58:61, 42:54] = 40
    return FaceCanvases(torch.from_numpy(c).permute(0, 3, 1, 2).contiguous(), torch.tensor([BOX] * n), tuple(map(str, range(n))))


@pytest.mark.parametrize("net", ["pcn1", "pcn2", "pcn3"])
def test_each_stage_trains_and_learns_the_synthetic_faces(net, tmp_path):
    torch.manual_seed(0)
    size = get_net_spec(net).crop_size
    negs = torch.randint(0, 120, (256, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cfg = PCNTrainConfig(net=net, out=str(tmp_path / net), faces_per_batch=32, negatives_per_batch=32, epochs=4,
                         steps_per_epoch=15, threads=1, cache_dir=None)
    cfg.optim.lr_boundaries = [3]
    from mtcnn.training import train as run
    from mtcnn.training.rotation_task import loop_config

    task = PCNTask(cfg, _synthetic_faces(64, 0), _synthetic_faces(32, 1), negs, negs[:64])
    path = run(loop_config(cfg), task=task)
    model = load_stage_net(path, net)  # the checkpoint records the registered spec
    assert [o.shape[1] for o in model(torch.zeros(1, 3, size, size))] == [2, 4, {"pcn1": 2, "pcn2": 3, "pcn3": 1}[net]]
    lines = [json.loads(l) for l in (tmp_path / net / "metrics.jsonl").read_text().splitlines()]
    val = [l["val"] for l in lines if l.get("val")]
    assert val, lines[-1]
    # Oriented ovals against noise: separable within a few dozen steps.
    assert val[-1]["recall"] > 0.8 and val[-1]["fpr"] < 0.2, val[-1]
    assert val[-1]["loss"] < val[0]["loss"] * 1.5
