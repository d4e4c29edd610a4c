"""refine_landmarks against an exact oracle, batching invariance, the bundle and the detector's cascade mode."""

import pytest
import torch

from mtcnn.cascade import LandmarkCascade, assemble_bundle, fit_box_adapter, load_cascade, net_checkpoint, update_bundle
from mtcnn.nets.cascade import CASCADE_NETS, LEVEL1_REGIONS, build_cascade_net
from mtcnn.nets import build_net
from mtcnn.stages import refine_landmarks
from mtcnn.atomic import atomic_torch_save
from mtcnn.weights import WeightsError, make_checkpoint


def _constant_cascade(uv: tuple[float, float] = (0.5, 0.5)) -> LandmarkCascade:
    """Every net answers ``uv`` for each of its points, whatever it sees."""
    nets = {}
    for name in CASCADE_NETS:
        net = build_cascade_net(name)
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.copy_(torch.tensor(uv).repeat(net.head.bias.numel() // 2))
        nets[name] = net
    return LandmarkCascade(nets).prepare()


def _images(sizes=((120, 100), (90, 160)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def test_level_fusion_and_mapping_against_an_oracle():
    boxes = torch.tensor([[20.0, 30.0, 80.0, 100.0], [50.0, 10.0, 90.0, 50.0]])
    out = refine_landmarks(_constant_cascade(), _images(), boxes, image_index=torch.tensor([0, 1]))
    x1, y1, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre_y = {k: (r[2] + r[3]) / 2 for k, r in LEVEL1_REGIONS.items()}  # each net's crop centre
    expected_y = torch.stack([
        y1 + h * (centre_y["F1"] + centre_y["EN1"]) / 2,                      # LE: F1, EN1
        y1 + h * (centre_y["F1"] + centre_y["EN1"]) / 2,                      # RE
        y1 + h * (centre_y["F1"] + centre_y["EN1"] + centre_y["NM1"]) / 3,    # N: all three
        y1 + h * (centre_y["F1"] + centre_y["NM1"]) / 2,                      # LM: F1, NM1
        y1 + h * (centre_y["F1"] + centre_y["NM1"]) / 2,                      # RM
    ], dim=1)  # fmt: skip
    torch.testing.assert_close(out.level1[..., 1], expected_y)
    torch.testing.assert_close(out.level1[..., 0], (x1 + w / 2)[:, None].expand(2, 5))
    # Patch nets answering the patch centre leave every point where it was.
    torch.testing.assert_close(out.level2, out.level1)
    torch.testing.assert_close(out.level3, out.level1)


def test_patch_levels_move_points_by_the_mean_of_their_two_nets():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    start = torch.full((1, 5, 2), 50.0)
    out = refine_landmarks(_constant_cascade((0.75, 0.5)), _images(((100, 100),)), boxes, start, start_level=2)
    # Level 2: +0.25 of the patch side, the mean of 2·0.16 and 2·0.18 of the box = +8.5 px.
    torch.testing.assert_close(out.level2[..., 0], torch.full((1, 5), 58.5))
    torch.testing.assert_close(out.level3[..., 0], torch.full((1, 5), 58.5 + 0.25 * 100 * (0.24 + 0.22) / 2))
    torch.testing.assert_close(out.level3[..., 1], torch.full((1, 5), 50.0))
    torch.testing.assert_close(out.level1, start)


def test_batched_refinement_equals_one_face_at_a_time():
    torch.manual_seed(3)
    cascade = LandmarkCascade({n: build_cascade_net(n) for n in CASCADE_NETS}).prepare()
    images = _images(((120, 100), (90, 160), (60, 60)), seed=1)
    boxes = torch.tensor([[20.0, 30.0, 80.0, 100.0], [50.0, 10.0, 90.0, 50.0], [-5.0, 2.0, 40.0, 55.0], [10.0, 20.0, 50.0, 60.0]])
    index = torch.tensor([0, 1, 2, 0])
    together = refine_landmarks(cascade, images, boxes, image_index=index, chunk_size=3)
    for k in range(4):
        alone = refine_landmarks(cascade, [images[int(index[k])]], boxes[k : k + 1], image_index=torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(together.level3[k : k + 1], alone.level3, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(together.level1[k : k + 1], alone.level1, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["relu", "abs_tanh"])
def test_each_level_equals_the_separate_nets(variant):
    """An oracle for the inference forms: each level from given points, the 23 nets run one by one
    on the same crops (normalised as the registry does), each point the mean of its nets."""
    from mtcnn.nets.cascade import PATCH_SIZE, nets_of_level
    from mtcnn.ops.landmark_crops import crop_resize_atlas, from_crop, patch_boxes, region_boxes, square_grid_box, to_grey

    torch.manual_seed(8)
    nets = {n: build_cascade_net(n, variant).eval() for n in CASCADE_NETS}
    cascade = LandmarkCascade(dict(nets), variant).prepare()
    images = _images(((120, 100), (90, 160)), seed=2)
    grey = [to_grey(im) for im in images]
    boxes = torch.tensor([[20.0, 30.0, 80.0, 100.0], [50.0, 10.0, 90.0, 50.0], [30.0, 20.0, 70.0, 70.0]])
    index = torch.tensor([0, 1, 0])
    out = refine_landmarks(cascade, images, boxes, image_index=index)

    def mean_of(estimates):  # [(point, [N, 2]), ...] -> [N, 5, 2]
        return torch.stack([torch.stack([e for p, e in estimates if p == k]).mean(0) for k in range(5)], dim=1)

    def crop(b, size, hw):
        return (crop_resize_atlas(grey, b, index, size)[:, :, : hw[0]] - 127.5) / 128

    with torch.no_grad():
        level1 = []
        for name in nets_of_level(1):
            spec = CASCADE_NETS[name]
            region = region_boxes(boxes, spec.region)
            uv = nets[name](crop(square_grid_box(region, spec.input_hw), 39, spec.input_hw)).reshape(3, -1, 2)
            level1 += [(p, e) for p, e in zip(spec.points, from_crop(uv, region).unbind(1))]
        torch.testing.assert_close(out.level1, mean_of(level1), atol=1e-4, rtol=0)
        previous = out.level1
        for level, got in ((2, out.level2), (3, out.level3)):
            found = []
            for name in nets_of_level(level):
                spec = CASCADE_NETS[name]
                patch = patch_boxes(previous[:, spec.points[0]], boxes, spec.half_size)
                uv = nets[name](crop(patch, PATCH_SIZE, (PATCH_SIZE, PATCH_SIZE))).reshape(3, 1, 2)
                found.append((spec.points[0], from_crop(uv, patch)[:, 0]))
            torch.testing.assert_close(got, mean_of(found), atol=1e-4, rtol=0)
            previous = got


def test_no_faces_gives_empty_levels():
    out = refine_landmarks(_constant_cascade(), _images(), torch.zeros(0, 4))
    assert out.level3.shape == (0, 5, 2)


def _write_run(run_dir, variant="relu"):
    for name, spec in CASCADE_NETS.items():
        net = build_cascade_net(name, variant)
        atomic_torch_save(make_checkpoint(spec.registry_name, net), net_checkpoint(run_dir, name))


@pytest.mark.parametrize("variant", ["relu", "abs_tanh"])
def test_bundle_round_trip(tmp_path, variant):
    torch.manual_seed(4)
    _write_run(tmp_path / "run", variant)
    path = assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt", variant, meta={"note": "test"})
    update_bundle(path, box_adapter=(0.1, 0.2, -0.1, 0.0))
    cascade = load_cascade(path)
    assert cascade.variant == variant and cascade.box_adapter == pytest.approx((0.1, 0.2, -0.1, 0.0))
    original = torch.load(net_checkpoint(tmp_path / "run", "F1"), weights_only=True)["state_dict"]
    for key, value in original.items():
        torch.testing.assert_close(cascade.nets["F1"].state_dict()[key], value)
    assert cascade.info["meta"]["note"] == "test"


def test_per_detector_calibrations_round_trip_and_fall_back(tmp_path):
    torch.manual_seed(6)
    _write_run(tmp_path / "run")
    path = assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt")
    update_bundle(path, box_adapter=(0.1, 0.2, -0.1, 0.0), detector_start="level1")
    update_bundle(path, box_adapter=(0.0, 0.3, 0.0, -0.1), detector_start="onet", detector_sha256="abc123")
    cascade = load_cascade(path)
    assert cascade.box_adapter == pytest.approx((0.1, 0.2, -0.1, 0.0)) and cascade.detector_start == "level1"
    mine = cascade.for_detector("abc123")
    assert mine.box_adapter == pytest.approx((0.0, 0.3, 0.0, -0.1)) and mine.detector_start == "onet"
    assert mine.nets is cascade.nets  # a view with other settings, not a second copy of the nets
    assert cascade.for_detector("other") is cascade and cascade.for_detector(None) is cascade
    boxes = torch.tensor([[10.0, 20.0, 110.0, 120.0]])
    torch.testing.assert_close(mine.adapt_boxes(boxes), torch.tensor([[10.0, 50.0, 110.0, 110.0]]))

    update_bundle(path, detector_start="onet", detector_sha256="bad")
    raw = torch.load(path, weights_only=False)
    raw["detector_calibrations"]["bad"]["detector_start"] = "level9"
    atomic_torch_save(raw, path)
    with pytest.raises(WeightsError, match=r"detector_calibrations\[bad\]\.detector_start 'level9'"):
        load_cascade(path)


def test_detector_uses_the_calibration_of_its_own_weights():
    from mtcnn.detector import MTCNN

    torch.manual_seed(7)
    nets = {n: build_cascade_net(n) for n in CASCADE_NETS}
    shipped_sha = MTCNN(device="cpu").weights_info["sha256"]
    cascade = LandmarkCascade(nets, box_adapter=(0.1, 0.1, 0.0, 0.0), detector_start="level1",
                              calibrations={shipped_sha: ((0.0, 0.2, 0.0, -0.05), "onet")})  # fmt: skip
    calibrated = MTCNN(device="cpu", landmarks="cascade", cascade=cascade).landmark_model
    assert calibrated.box_adapter == (0.0, 0.2, 0.0, -0.05) and calibrated.detector_start == "onet"
    other = MTCNN(nets={k: build_net(k) for k in ("pnet", "rnet", "onet")}, device="cpu", landmarks="cascade", cascade=cascade)
    assert other.landmark_model.box_adapter == (0.1, 0.1, 0.0, 0.0) and other.landmark_model.detector_start == "level1"


@pytest.mark.weights
def test_calibrating_for_two_detectors_keeps_both(tmp_path, original_weights, shared_data):
    """calibrate_bundle stores one entry per detector weights; the first calibration also fills the
    top-level pair that other detectors use, and a later one leaves it alone."""
    from mtcnn.config import default_config, load_config
    from mtcnn.detector import MTCNN
    from mtcnn.training.cascade_run import calibrate_bundle
    from mtcnn.training.cascade_task import CascadeTrainConfig

    torch.manual_seed(8)
    _write_run(tmp_path / "run")
    path = assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt")
    cfg = load_config(CascadeTrainConfig, default_config("landmarks_cascade.yaml"), ["holdout_every=1000"])  # ~10 faces
    first = calibrate_bundle(cfg, path, original_weights)
    second = calibrate_bundle(cfg, path, "default")
    cascade = load_cascade(path)
    ours, theirs = MTCNN(device="cpu").weights_info["sha256"], MTCNN(weights=original_weights, device="cpu").weights_info["sha256"]
    assert set(cascade.calibrations) == {ours, theirs}
    assert cascade.calibrations[theirs] == (pytest.approx(first["box_adapter"]), first["start"])
    assert cascade.calibrations[ours] == (pytest.approx(second["box_adapter"]), second["start"])
    assert cascade.box_adapter == pytest.approx(first["box_adapter"]) and cascade.detector_start == first["start"]
    assert set(cascade.info["meta"]["calibrations"]) == {ours, theirs}
    assert first["box_adapter"] != pytest.approx(second["box_adapter"])  # the two detectors' boxes differ



def test_calibrate_only_trains_nothing_and_keeps_the_nets(tmp_path, shared_data, capsys):
    """A bundle calibrated for retrained detector weights without its training run folder:
    nothing is trained, the nets stay bit-identical, the new entry is added."""
    from mtcnn.commands.train_landmarks import main
    from mtcnn.detector import MTCNN

    if not (shared_data / "cnn_facepoint").is_dir():
        pytest.skip("needs cnn_facepoint")
    torch.manual_seed(9)
    _write_run(tmp_path / "run")
    path = assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt")
    before = load_cascade(path)
    out = tmp_path / "no_run_here"
    assert main(["--bundle", str(path), "--calibrate-with", "default", "--calibrate-only", "--out", str(out),
                 "holdout_every=1000"]) == 0
    assert not out.exists()
    after = load_cascade(path)
    assert set(after.calibrations) == {MTCNN(device="cpu").weights_info["sha256"]}
    for name, net in before.nets.items():
        for a, b in zip(net.state_dict().values(), after.nets[name].state_dict().values()):
            assert torch.equal(a, b), name
    with pytest.raises(SystemExit):
        main(["--calibrate-only", "--calibrate-with", "default"])
    assert "--calibrate-only needs --bundle and --calibrate-with" in capsys.readouterr().err

def test_bundle_problems_are_one_line_errors(tmp_path):
    _write_run(tmp_path / "run")
    with pytest.raises(WeightsError, match="has shape"):  # relu nets are not the abs_tanh variant
        assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt", "abs_tanh")
    net_checkpoint(tmp_path / "run", "LE32").unlink()
    with pytest.raises(WeightsError, match="missing LE32"):
        assemble_bundle(tmp_path / "run", tmp_path / "cascade.pt")
    atomic_torch_save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="not a landmark cascade bundle"):
        load_cascade(tmp_path / "bad.pt")


def test_box_adapter_fit_recovers_a_known_offset():
    det = torch.tensor([[0.0, 0.0, 100.0, 120.0], [10.0, 10.0, 60.0, 70.0], [5.0, 0.0, 25.0, 30.0]])
    size = (det[:, 2:] - det[:, :2]).repeat(1, 2)
    truth = det + torch.tensor([0.1, 0.25, -0.1, -0.05]) * size
    a = fit_box_adapter(det, truth)
    assert a == pytest.approx((0.1, 0.25, -0.1, -0.05), abs=1e-6)
    cascade = LandmarkCascade({}, box_adapter=a)
    torch.testing.assert_close(cascade.adapt_boxes(det), truth)


@pytest.mark.weights
def test_detector_cascade_mode_outputs_level_three(original_weights, shared_data):
    from mtcnn.detector import MTCNN
    from mtcnn.io import read_image_rgb

    torch.manual_seed(5)
    cascade = LandmarkCascade({n: build_cascade_net(n) for n in CASCADE_NETS}, box_adapter=(0.05, 0.1, -0.05, 0.0))
    plain = MTCNN(weights=original_weights, device="cpu")
    refined = MTCNN(weights=original_weights, device="cpu", landmarks="cascade", cascade=cascade)
    image = read_image_rgb(shared_data / "dlib_faces" / "2008_002470.jpg")
    a, b = plain.detect(image)[0], refined.detect(image)[0]
    assert len(a) > 0
    torch.testing.assert_close(a.boxes, b.boxes)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    zeros = torch.zeros(len(a), dtype=torch.long)
    expected = refine_landmarks(cascade.prepare(), [tensor], cascade.adapt_boxes(a.boxes), a.landmarks, zeros).level3
    torch.testing.assert_close(b.landmarks, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="landmarks="):
        MTCNN(weights=original_weights, device="cpu", landmarks="sun")


def test_shipped_bundle_loads_and_matches_its_card():
    import json

    from mtcnn.cascade import DEFAULT_CASCADE

    if not DEFAULT_CASCADE.is_file():
        pytest.skip(f"{DEFAULT_CASCADE} is not shipped in this checkout")
    cascade = load_cascade()
    card = json.loads(DEFAULT_CASCADE.with_suffix(".json").read_text())
    assert len(cascade.nets) == 23 and cascade.variant == card["variant"]
    assert cascade.info["sha256"] == card["weights_sha256"]
    assert cascade.detector_start == card["detector_start"] and "research" in card["terms"]


def test_bfloat16_cascade_stays_within_a_hundredth_of_the_box_of_float32():
    """bf16 autocast changes the points (so it really ran) by little: the shipped nets on smooth
    random images, every level within 1 % of the box width of float32's (mean error moved by
    ~0.0001 on CNN_FacePoint test)."""
    import torch.nn.functional as F

    from mtcnn.cascade import DEFAULT_CASCADE

    if not DEFAULT_CASCADE.is_file():
        pytest.skip(f"{DEFAULT_CASCADE} is not shipped in this checkout")
    g = torch.Generator().manual_seed(3)
    images = [F.interpolate(torch.rand(1, 3, 30, 40, generator=g) * 255, size=(240, 320), mode="bicubic")[0].clamp(0, 255).to(torch.uint8)
              for _ in range(3)]
    boxes = torch.tensor([[40.0, 30.0, 140.0, 150.0], [150.0, 60.0, 230.0, 150.0], [10.0, 10.0, 60.0, 70.0]]).repeat(3, 1)
    index = torch.arange(3).repeat_interleave(3)
    exact = refine_landmarks(load_cascade().prepare("cpu"), images, boxes, image_index=index)
    fast = refine_landmarks(load_cascade().prepare("cpu", "bfloat16"), images, boxes, image_index=index)
    width = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    for level in (1, 2, 3):
        moved = (fast.level(level) - exact.level(level)).abs() / width
        assert 0 < moved.max() < 0.01, level
    with pytest.raises(ValueError, match="precision"):
        load_cascade().prepare("cpu", "float16")


@pytest.mark.weights
def test_detector_precision_reaches_the_cascade(original_weights):
    from mtcnn.detector import MTCNN

    detector = MTCNN(weights=original_weights, device="cpu", landmarks="cascade", precision="bfloat16")
    assert detector.landmark_model.precision == "bfloat16"
    assert detector.settings["cascade_precision"] == "bfloat16"
    assert detector.with_landmarks("cascade").landmark_model is not detector.landmark_model
    assert detector.with_landmarks("cascade").landmark_model.precision == "bfloat16"


def test_prepare_resolves_auto_precision_as_the_detector_does():
    # tools/evaluate.py landmarks --landmarks cascade passes its default --precision auto here.
    from mtcnn.backends import resolve_precision
    from mtcnn.cascade import load_cascade

    cascade = load_cascade().prepare("cpu", "auto")
    assert cascade.precision == resolve_precision("auto", "cpu") and cascade.precision in ("float32", "bfloat16")
