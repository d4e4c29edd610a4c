import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtcnn import MTCNN, Detections
from mtcnn.io import read_image_rgb
from mtcnn.nets import build_net
from mtcnn.ops.boxes import box_iou
from mtcnn.weights import NET_NAMES, WeightsError, import_facenet_pytorch, load_bundle, make_checkpoint, save_bundle


def random_nets(seed=0):
    torch.manual_seed(seed)
    return {name: build_net(name) for name in NET_NAMES}


def permissive_detector(seed=0, **kw):
    # Random weights with thresholds at 0 let every stage pass candidates through.
    return MTCNN(nets=random_nets(seed), thresholds=(0.0, 0.0, 0.0), device="cpu", **kw)


def test_batch_of_different_sizes_equals_one_by_one():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((120, 90), (64, 200), (37, 41))]
    detector = permissive_detector(min_face_size=24)
    together = detector.detect(images)
    alone = [detector.detect(im)[0] for im in images]
    assert len(together) == 3
    for a, b in zip(together, alone):
        assert len(a) == len(b) > 0
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3)
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert torch.allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_results_are_sorted_and_typed():
    image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    faces = permissive_detector(min_face_size=30).detect(image)[0]
    assert isinstance(faces, Detections)
    assert faces.boxes.dtype == torch.float32 and faces.landmarks.shape == (len(faces), 5, 2)
    assert torch.all(faces.scores[:-1] >= faces.scores[1:])


def test_tiny_and_blank_images_give_the_empty_form():
    detector = permissive_detector()
    tiny, blank = np.zeros((11, 30, 3), np.uint8), np.zeros((200, 200, 3), np.uint8)
    res = MTCNN(nets=random_nets(), device="cpu").detect([tiny, blank])
    for faces in [detector.detect(tiny)[0], res[0]]:
        assert len(faces) == 0
        assert faces.boxes.shape == (0, 4) and faces.scores.shape == (0,) and faces.landmarks.shape == (0, 5, 2)
    assert detector.detect([]) == []


def test_grey_rgba_and_tensor_inputs_match_rgb():
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (80, 96), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((80, 96, 1), 255, np.uint8)], axis=2)
    detector = permissive_detector(min_face_size=30)
    ref = detector.detect(rgb)[0]
    for other in (grey[:, :, None], rgba, torch.from_numpy(rgb)):
        got = detector.detect([other])[0]
        assert torch.allclose(got.boxes, ref.boxes) and torch.allclose(got.scores, ref.scores)


def test_wrong_shapes_raise_clear_errors():
    detector = permissive_detector()
    with pytest.raises(ValueError, match="H×W×3"):
        detector.detect([torch.zeros(3, 50, 50, dtype=torch.uint8)])
    with pytest.raises(OSError, match="image 0"):
        detector.detect([np.zeros((10, 10, 5), np.uint8)])


def test_config_validation_in_constructor():
    from mtcnn.config import ConfigError

    with pytest.raises(ConfigError, match="thresholds"):
        MTCNN(nets=random_nets(), thresholds=(0.6, 1.5, 0.7))
    with pytest.raises(ConfigError, match="did you mean 'chunk_size'"):
        MTCNN(nets=random_nets(), chunksize=3)
    wider = MTCNN(nets=random_nets(), preset="wider")
    assert (wider.config.min_face_size, wider.config.factor, wider.config.thresholds) == (10.0, 0.79, (0.5, 0.5, 0.3))
    # A setting given explicitly wins over the preset, even when it equals the plain default.
    mixed = MTCNN(nets=random_nets(), preset="wider", min_face_size=20)
    assert (mixed.config.min_face_size, mixed.config.factor) == (20.0, 0.79)
    assert MTCNN(nets=random_nets()).config.min_face_size == 20.0
    with pytest.raises(ValueError, match="unknown preset 'widr'"):
        MTCNN(nets=random_nets(), preset="widr")


def test_checkpoint_round_trip_and_validation(tmp_path):
    nets = random_nets(3)
    save_bundle(nets, tmp_path / "b.pt")
    loaded, info = load_bundle(tmp_path / "b.pt")
    for name in NET_NAMES:
        for k, v in nets[name].state_dict().items():
            assert torch.equal(loaded[name].state_dict()[k], v)
    assert len(info["sha256"]) == 12

    with pytest.raises(WeightsError, match="not found"):
        load_bundle(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="text.pt: not a PyTorch checkpoint"):
        load_bundle(tmp_path / "text.pt")
    good = (tmp_path / "b.pt").read_bytes()
    (tmp_path / "corrupt.pt").write_bytes(good[: len(good) // 2])  # a torch.save file cut short
    with pytest.raises(WeightsError, match="corrupt.pt: not a readable checkpoint"):
        load_bundle(tmp_path / "corrupt.pt")
    torch.save(nets["pnet"].state_dict(), tmp_path / "raw.pt")
    with pytest.raises(WeightsError, match="not an mtcnn weights bundle"):
        load_bundle(tmp_path / "raw.pt")
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in NET_NAMES:
        # A folder with R-Net's checkpoint saved under P-Net's name must be refused.
        torch.save(make_checkpoint("rnet" if name == "pnet" else name, nets["rnet" if name == "pnet" else name]), folder / f"{name}.pt")
    with pytest.raises(WeightsError, match="holds a 'rnet' but a 'pnet' was expected"):
        load_bundle(folder)
    bad = make_checkpoint("onet", nets["onet"])
    bad["preprocessing"]["channel_order"] = "BGR"
    with pytest.raises(WeightsError, match="channel_order"):
        from mtcnn.weights import load_net

        load_net(bad, "onet", "x.pt")


def test_weights_carry_their_calibrated_thresholds_below_presets_and_arguments(tmp_path):
    import json

    nets = random_nets(4)
    save_bundle(nets, tmp_path / "calibrated.pt", detector={"thresholds": [0.6, 0.7, 0.25]})
    assert MTCNN(weights=tmp_path / "calibrated.pt", device="cpu").config.thresholds == (0.6, 0.7, 0.25)
    assert MTCNN(weights=tmp_path / "calibrated.pt", device="cpu", preset="wider").config.thresholds == (0.5, 0.5, 0.3)
    assert MTCNN(weights=tmp_path / "calibrated.pt", device="cpu", thresholds=(0.1, 0.2, 0.3)).config.thresholds == (0.1, 0.2, 0.3)
    save_bundle(nets, tmp_path / "plain.pt")
    assert MTCNN(weights=tmp_path / "plain.pt", device="cpu").config.thresholds == (0.6, 0.7, 0.7)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in NET_NAMES:
        torch.save(make_checkpoint(name, nets[name]), folder / f"{name}.pt")
    (folder / "detector.json").write_text(json.dumps({"thresholds": [0.6, 0.7, 0.4], "min_face_size": 24}))
    config = MTCNN(weights=folder, device="cpu").config
    assert config.thresholds == (0.6, 0.7, 0.4) and config.min_face_size == 24
    (folder / "detector.json").write_text(json.dumps({"thresholds": [0.6, 0.7, 1.4]}))
    with pytest.raises(WeightsError, match=r"detector.json: detector settings: .*thresholds"):
        MTCNN(weights=folder, device="cpu")
    (folder / "detector.json").write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(WeightsError, match="detector.json: detector settings: unknown config key 'threshold'"):
        load_bundle(folder)
    (folder / "detector.json").write_text("{not json")
    with pytest.raises(WeightsError, match="detector.json: not readable detector settings"):
        load_bundle(folder)


def test_missing_weights_message_says_how_to_get_them(monkeypatch):
    monkeypatch.delenv("MTCNN_WEIGHTS", raising=False)
    import mtcnn.weights as w

    monkeypatch.setattr(w, "DEFAULT_WEIGHTS", w.Path("/nonexistent/weights"))
    with pytest.raises(WeightsError, match="convert_weights.py"):
        MTCNN()


def test_weights_names_resolve(monkeypatch, tmp_path):
    import mtcnn.weights as w

    monkeypatch.delenv("MTCNN_WEIGHTS", raising=False)
    monkeypatch.delenv("MTCNN_ORIGINAL_WEIGHTS", raising=False)
    # A folder holding the three stage checkpoints is the default; one missing file is no default.
    for name in ("pnet", "rnet"):
        (tmp_path / f"{name}.pt").write_bytes(b"x")
    monkeypatch.setattr(w, "DEFAULT_WEIGHTS", tmp_path)
    with pytest.raises(WeightsError, match="not installed"):
        w.resolve_weights(None)
    (tmp_path / "onet.pt").write_bytes(b"x")
    assert w.resolve_weights(None) == w.resolve_weights("default") == tmp_path
    monkeypatch.setenv("MTCNN_WEIGHTS", "elsewhere.pt")
    assert w.resolve_weights(None) == w.Path("elsewhere.pt") and w.resolve_weights("mine.pt") == w.Path("mine.pt")
    # 'original': the environment, else third_party/ under the working folder, else a clear error.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(w, "__file__", str(tmp_path / "pkg" / "mtcnn" / "weights.py"))
    with pytest.raises(WeightsError, match="--weights original: no third_party/mtcnn_original.pt"):
        w.resolve_weights("original")
    (tmp_path / "third_party").mkdir()
    (tmp_path / "third_party" / "mtcnn_original.pt").write_bytes(b"x")
    assert w.resolve_weights("original") == tmp_path / "third_party" / "mtcnn_original.pt"
    monkeypatch.setenv("MTCNN_ORIGINAL_WEIGHTS", "/x/orig.pt")
    assert w.resolve_weights("original") == w.Path("/x/orig.pt")


def _facenet_reference_forward(state, x, net):
    """facenet-pytorch's forward, written from its layer list with functional ops."""
    p = lambda t, k: F.prelu(t, state[k + ".weight"])  # noqa: E731
    c = lambda t, k: F.conv2d(t, state[k + ".weight"], state[k + ".bias"])  # noqa: E731
    fc = lambda t, k: F.linear(t, state[k + ".weight"], state[k + ".bias"])  # noqa: E731
    if net == "pnet":
        x = p(c(F.max_pool2d(p(c(x, "conv1"), "prelu1"), 2, 2, ceil_mode=True), "conv2"), "prelu2")
        x = p(c(x, "conv3"), "prelu3")
        return c(x, "conv4_1"), c(x, "conv4_2"), None
    if net == "rnet":
        x = F.max_pool2d(p(c(x, "conv1"), "prelu1"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(p(c(x, "conv2"), "prelu2"), 3, 2, ceil_mode=True)
        x = p(c(x, "conv3"), "prelu3").permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = p(fc(x, "dense4"), "prelu4")
        return fc(x, "dense5_1"), fc(x, "dense5_2"), None
    x = F.max_pool2d(p(c(x, "conv1"), "prelu1"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(p(c(x, "conv2"), "prelu2"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(p(c(x, "conv3"), "prelu3"), 2, 2, ceil_mode=True)
    x = p(c(x, "conv4"), "prelu4").permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = p(fc(x, "dense5"), "prelu5")
    return fc(x, "dense6_1"), fc(x, "dense6_2"), fc(x, "dense6_3")


@pytest.mark.parametrize("net,size", [("pnet", 37), ("rnet", 24), ("onet", 48)])
def test_converted_weights_reproduce_the_original_forward(facenet_wheel, net, size):
    with zipfile.ZipFile(facenet_wheel) as z:
        state = torch.load(io.BytesIO(z.read(f"facenet_pytorch/data/{net}.pt")), weights_only=True)
    ours = import_facenet_pytorch(facenet_wheel)[net]
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        got = ours(x)
        ref = _facenet_reference_forward(state, x, net)
    assert torch.allclose(got[0], ref[0], atol=1e-4) and torch.allclose(got[1], ref[1], atol=1e-5)
    if net == "onet":
        # Original landmark layout [x1..x5, y1..y5]; ours interleaved.
        assert torch.allclose(got[2][:, 0::2], ref[2][:, :5], atol=1e-5)
        assert torch.allclose(got[2][:, 1::2], ref[2][:, 5:], atol=1e-5)


def _dlib_ground_truth(root):
    truth = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(root / name).getroot().iter("image"):
            boxes = [
                [float(b.get("left")), float(b.get("top")), float(b.get("left")) + float(b.get("width")), float(b.get("top")) + float(b.get("height"))]
                for b in image.iter("box")
            ]
            truth[image.get("file")] = torch.tensor(boxes)
    return truth


def _greedy_matches(iou, threshold):
    pairs = sorted(((iou[i, j].item(), i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])), reverse=True)
    used_gt, used_det = set(), set()
    for value, i, j in pairs:
        if value >= threshold and i not in used_gt and j not in used_det:
            used_gt.add(i)
            used_det.add(j)
    return len(used_gt), iou.shape[1] - len(used_det)


def test_original_weights_find_the_dlib_faces(shared_data, original_weights):
    root = shared_data / "dlib_faces"
    if not (root / "testing.xml").is_file():
        pytest.skip(f"{root} missing")
    truth = _dlib_ground_truth(root)
    assert sum(len(b) for b in truth.values()) == 43
    detector = MTCNN(weights=original_weights, device="cpu")
    names = sorted(truth)
    results = detector.detect([read_image_rgb(root / n) for n in names])
    found = unmatched = 0
    for name, faces in zip(names, results):
        f, u = _greedy_matches(box_iou(truth[name], faces.boxes), 0.3)
        found, unmatched = found + f, unmatched + u
    assert found >= 42, f"found {found}/43"
    assert unmatched <= 1, f"{unmatched} detections match no annotated face"


def test_top_per_group_keeps_the_best_of_each_group_in_index_order():
    from mtcnn.stages import top_per_group

    scores = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.7, 0.2, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    assert top_per_group(scores, groups, 2).tolist() == [1, 2, 3, 4, 6]
    assert top_per_group(scores, groups, 1).tolist() == [1, 4, 6]
    assert top_per_group(torch.full((3,), 0.5), torch.zeros(3, dtype=torch.long), 2).tolist() == [0, 1]  # ties by index
    assert top_per_group(scores, groups, 3) is None and top_per_group(scores, groups, None) is None


def test_a_flood_of_windows_is_capped_at_every_stage(monkeypatch):
    # Thresholds at 0 make P-Net fire on every cell: the caps bound what each stage works on (per
    # level and per image), and caps above the counts change nothing.
    import mtcnn.stages as stages

    nms_groups, cropped = [], {}
    nms, score_crops = stages.batched_nms, stages._score_crops

    def spy_nms(boxes, scores, groups, *args, **kw):
        nms_groups.append(int(torch.bincount(groups).max()))
        return nms(boxes, scores, groups, *args, **kw)

    def spy_crops(net, images, candidates, size, *args, **kw):
        cropped[size] = int(torch.bincount(candidates.image_index).max())
        return score_crops(net, images, candidates, size, *args, **kw)

    monkeypatch.setattr(stages, "batched_nms", spy_nms)
    monkeypatch.setattr(stages, "_score_crops", spy_crops)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (150, 130, 3), dtype=np.uint8) for _ in range(2)]
    # onet_points="crop": the refit pass crops the faces found once more, which would overwrite what O-Net's stage cropped
    uncapped = permissive_detector(min_face_size=12, pnet_max_windows=None, rnet_max_candidates=None, onet_max_candidates=None,
                                   onet_points="crop")
    free = uncapped.detect(images)
    assert nms_groups[0] > 300 and cropped[24] > 200 and cropped[48] > 50  # the first NMS is P-Net's per level
    nms_groups.clear()
    capped = uncapped.with_settings(pnet_max_windows=300, rnet_max_candidates=200, onet_max_candidates=50).detect(images)
    assert nms_groups[0] == 300 and cropped[24] == 200 and cropped[48] == 50
    assert all(0 < len(c) <= 50 for c in capped)
    roomy = uncapped.with_settings(pnet_max_windows=10**6, rnet_max_candidates=10**6, onet_max_candidates=10**6).detect(images)
    for a, b in zip(free, roomy):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)


def test_points_are_refit_in_each_faces_final_box_and_detections_stay():
    """``onet_points="refit"`` (the default) places the points with one more O-Net pass over each
    face's final box; the boxes and scores are those of ``"crop"`` (the points of the NMS winner)."""
    from mtcnn.stages import Candidates, score_onet

    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), rng.integers(0, 256, (70, 60, 3), dtype=np.uint8)]
    refit = permissive_detector(seed=3, min_face_size=24)
    assert refit.config.onet_points == "refit"
    crop = refit.with_settings(onet_points="crop")
    a, b = refit.detect(images), crop.detect(images)
    assert sum(len(d) for d in a) > 0
    for k, (r, c) in enumerate(zip(a, b)):
        assert torch.equal(r.boxes, c.boxes) and torch.equal(r.scores, c.scores)
        # the oracle: O-Net run directly on the final boxes gives the refit points
        tensor = torch.from_numpy(images[k]).permute(2, 0, 1)
        final = Candidates(r.boxes, r.scores, torch.zeros(len(r), dtype=torch.long), r.landmarks)
        _, again = score_onet(refit.onet, [tensor], final, threshold=-1.0)
        torch.testing.assert_close(r.landmarks, again.landmarks.float(), atol=1e-4, rtol=0)
    assert any(not torch.allclose(r.landmarks, c.landmarks) for r, c in zip(a, b))
