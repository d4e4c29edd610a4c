import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.nets import build_net
from mtcnn.ops.inference import MaxPool2x2, restore_layers, speed_up_layers


@pytest.mark.parametrize("shape", [(1, 10, 286, 382), (2, 10, 285, 381), (3, 64, 8, 7), (1, 4, 1, 1), (1, 3, 2, 5)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pair_pool_is_bit_identical_to_ceil_mode_max_pool(shape, layout):
    x = torch.randn(shape).contiguous(memory_format=layout)
    x[0, 0, -1, -1] = -1e30  # an edge window that only covers very negative values
    assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2, 2, ceil_mode=True))


def test_only_2x2_stride_2_ceil_pools_are_swapped_and_weights_stay():
    torch.manual_seed(0)
    net = build_net("onet").eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        before = net(x)
        speed_up_layers(net)
        after = net(x)
    pools = [type(m).__name__ for m in net.body if "Pool" in type(m).__name__]
    assert pools == ["MaxPool2d", "MaxPool2d", "MaxPool2x2"]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    other = nn.Sequential(nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 1, ceil_mode=True))
    assert [type(m) for m in speed_up_layers(other)] == [nn.MaxPool2d, nn.MaxPool2d]


def test_detector_leaves_the_callers_nets_alone_and_they_still_export():
    from mtcnn import MTCNN
    from mtcnn.export import onnx_bytes, torchscript_bytes
    from mtcnn.ops.inference import restore_layers

    torch.manual_seed(0)
    nets = {k: build_net(k) for k in ("pnet", "rnet", "onet")}
    detector = MTCNN(nets=nets, device="cpu")
    assert not any(isinstance(m, MaxPool2x2) for n in nets.values() for m in n.modules())
    assert any(isinstance(m, MaxPool2x2) for m in detector.pnet.modules())
    torchscript_bytes(detector.pnet, "pnet")  # a prepared net exports through the standard layers
    restored = restore_layers(speed_up_layers(build_net("pnet")))
    assert [type(m) for m in restored.body] == [type(m) for m in build_net("pnet").body]
    pytest.importorskip("onnx")
    assert len(onnx_bytes(detector.pnet, "pnet")) > 1000


def _net_with_negative_and_positive_slopes(name):
    """A random net whose PReLU slopes cover negative, zero, between 0 and 1 and above 1 (as the
    original weights do: every pooled layer of them has some negative slopes)."""
    torch.manual_seed(1)
    net = build_net(name).eval()
    for m in net.modules():
        if isinstance(m, nn.PReLU):
            m.weight.data = torch.linspace(-0.7, 1.3, m.weight.numel())
    return net


@pytest.mark.parametrize("name,shapes", [("pnet", [(1, 12, 12), (1, 37, 51), (2, 48, 30)]),
                                         ("rnet", [(1, 24, 24), (33, 24, 24)]),
                                         ("onet", [(1, 48, 48), (5, 48, 48)])])
def test_one_dnn_net_matches_the_plain_layers(name, shapes):
    from mtcnn.ops.inference import OneDnnNet, one_dnn_net

    net = _net_with_negative_and_positive_slopes(name)
    fast = one_dnn_net(speed_up_layers(copy.deepcopy(net).to(memory_format=torch.channels_last)))
    assert isinstance(fast, OneDnnNet)
    with torch.inference_mode():
        for n, h, w in shapes + [(0,) + shapes[0][1:]]:
            x = torch.randn(n, 3, h, w).contiguous(memory_format=torch.channels_last)
            for marks in (True, False):
                want, got = net(x, with_landmarks=marks), fast(x, with_landmarks=marks)
                assert (got[2] is None) == (not marks)
                for a, b in zip(want, got):
                    if a is not None:
                        assert a.shape == b.shape
                        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name,shape", [("pnet", (2, 3, 37, 51)), ("rnet", (9, 3, 24, 24)), ("onet", (5, 3, 48, 48))])
def test_pool_runs_before_a_prelu_without_negative_slopes_bit_identically(name, shape, monkeypatch):
    import mtcnn.ops.inference as inference

    net = _net_with_negative_and_positive_slopes(name)
    first = next(m for m in net.body if isinstance(m, nn.PReLU))
    first.weight.data = first.weight.data.abs()  # only the first PReLU (always followed by a pool) is monotone
    net = speed_up_layers(net.to(memory_format=torch.channels_last))
    fast = inference.one_dnn_net(copy.deepcopy(net))
    order = [type(m).__name__ for m in fast._body]
    assert order[1:3] in (["MaxPool2d", "PReLU"], ["MaxPool2x2", "PReLU"])
    assert order.count("PReLU") == sum(isinstance(m, nn.PReLU) for m in net.body)
    if name != "pnet":  # R/O-Net's later pooled PReLUs have negative slopes: conv -> PReLU -> pool stays
        later = [i for i, m in enumerate(fast._body[3:-1], 3) if isinstance(m, nn.PReLU)]
        assert any("Pool" in type(fast._body[i + 1]).__name__ for i in later)
    monkeypatch.setattr(inference, "pool_before_monotone_prelu", list)
    written_order = inference.one_dnn_net(copy.deepcopy(net))
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in zip(fast(x), written_order(x)):
            assert torch.equal(a, b)


def test_one_dnn_net_unwraps_for_export_and_skips_other_nets():
    from mtcnn import MTCNN
    from mtcnn.export import onnx_bytes, torchscript_bytes
    from mtcnn.ops.inference import OneDnnNet, one_dnn_net

    torch.manual_seed(0)
    nets = {k: build_net(k) for k in ("pnet", "rnet", "onet")}
    detector = MTCNN(nets=nets, device="cpu")
    assert all(isinstance(n, OneDnnNet) for n in (detector.pnet, detector.rnet, detector.onet))
    wrapped = copy.deepcopy(detector.onet)
    assert restore_layers(wrapped) is wrapped.net
    assert set(detector.onet.state_dict()) == {f"net.{k}" for k in nets["onet"].state_dict()}
    torchscript_bytes(detector.rnet, "rnet")
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert one_dnn_net(other) is other
    pnet = build_net("pnet")
    pnet.box = nn.Conv2d(32, 4, 3)  # not a 1×1 head: left alone
    assert one_dnn_net(pnet) is pnet
    pytest.importorskip("onnx")
    assert len(onnx_bytes(detector.onet, "onet")) > 1000


def _paint_oracle(images, packing, canvas_id, height, width):
    """The canvas painter before the solo-level shortcut: a zero canvas, each level normalised
    as (x - mean) * scale and copied into its slot, odd edges repeated."""
    from mtcnn.stages import PIXEL_MEAN, PIXEL_SCALE

    canvas = torch.zeros((1, 3, height, width))
    for lv in packing.levels:
        if lv.canvas != canvas_id:
            continue
        im = images[lv.image_index][None]
        level = F.interpolate(im.contiguous(memory_format=torch.channels_last), size=(lv.height, lv.width),
                              mode="bilinear", antialias=True, align_corners=False).float()
        level = (level - PIXEL_MEAN) * PIXEL_SCALE
        y0, x0, h, w = lv.y0, lv.x0, lv.height, lv.width
        canvas[:, :, y0 : y0 + h, x0 : x0 + w] = level
        canvas[:, :, y0 + h : y0 + h + (h & 1), x0 : x0 + w] = level[:, :, -1:, :]
        canvas[:, :, y0 : y0 + h + (h & 1), x0 + w : x0 + w + (w & 1)] = canvas[:, :, y0 : y0 + h + (h & 1), x0 + w - 1 : x0 + w]
    return canvas


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_painted_canvases_equal_the_zero_canvas_oracle(dtype):
    from mtcnn.ops.pyramid import pack_pyramid
    from mtcnn.stages import _paint_canvas

    torch.manual_seed(0)
    sizes = [(61, 90), (40, 33), (64, 80)]
    images = [(torch.rand(3, h, w) * 255).round().to(dtype) for h, w in sizes]
    packing = pack_pyramid(sizes, 12, 0.7, solo_pixels=2000)
    solo = [cid for cid in range(len(packing.canvas_sizes)) if sum(lv.canvas == cid for lv in packing.levels) == 1]
    assert solo and len(solo) < len(packing.canvas_sizes)  # both paths, odd and even levels
    assert {lv.height & 1 for lv in packing.levels} == {0, 1}
    for cid, (h, w) in enumerate(packing.canvas_sizes):
        got = _paint_canvas(images, packing, cid, h, w)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, _paint_oracle(images, packing, cid, h, w))


@pytest.mark.parametrize("name,shape", [("rnet", (40, 3, 24, 24)), ("onet", (24, 3, 48, 48))])
def test_bfloat16_crop_nets_track_float32(name, shape):
    from mtcnn.ops.inference import one_dnn_net

    net = _net_with_negative_and_positive_slopes(name)
    prepared = speed_up_layers(copy.deepcopy(net).to(memory_format=torch.channels_last))
    fp32, bf16 = one_dnn_net(prepared), one_dnn_net(prepared, torch.bfloat16)
    torch.manual_seed(2)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = net(x), bf16(x)
        assert all(torch.equal(p, q) for p, q in zip(fp32.state_dict().values(), bf16.state_dict().values()))
    for a, b in zip(want, got):
        assert b.dtype == torch.float32 and a.shape == b.shape
        scale = a.abs().max().item()
        # bfloat16 keeps 8 significant bits: each output within a few percent of the output range.
        assert (a - b).abs().max().item() < 0.03 * scale
        assert not torch.equal(a, b)  # it really ran in bf16
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.999


def test_bfloat16_is_refused_where_it_is_not_implemented():
    from mtcnn import MTCNN
    from mtcnn.ops.inference import one_dnn_net

    with pytest.raises(ValueError, match="P-Net runs float32"):
        one_dnn_net(build_net("pnet").eval(), torch.bfloat16)
    with pytest.raises(ValueError, match="float32 only"):
        one_dnn_net(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.bfloat16)
    nets = {k: build_net(k) for k in ("pnet", "rnet", "onet")}
    with pytest.raises(ValueError, match="choose one of float32, bfloat16"):
        MTCNN(nets=nets, device="cpu", precision="float16")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="torch backend only"):
        MTCNN(nets=nets, device="cpu", backend="onnxruntime", precision="bfloat16")


@pytest.mark.parametrize("name,size", [("rnet", 24), ("onet", 48)])
def test_checked_bfloat16_net_passes_exactly_the_float32_windows(name, size):
    """Thresholds placed between bf16's and float32's score of a window flip plain bf16's
    decision; the checked net decides every one of them as float32 does."""
    from mtcnn.ops.inference import CheckedNet, one_dnn_net
    from mtcnn.stages import Candidates, _score_crops, crop_candidates

    net = _net_with_negative_and_positive_slopes(name)
    prepared = speed_up_layers(copy.deepcopy(net).to(memory_format=torch.channels_last))
    fp32, bf16 = one_dnn_net(prepared), one_dnn_net(prepared, torch.bfloat16)
    checked = CheckedNet(bf16, fp32)
    torch.manual_seed(3)
    image = (torch.rand(3, 160, 200) * 255).to(torch.uint8)
    xy = torch.rand(64, 2) * torch.tensor([150.0, 110.0])
    boxes = torch.cat([xy, xy + 20 + torch.rand(64, 1) * 30], dim=1)
    cands = Candidates(boxes, torch.ones(64), torch.zeros(64, dtype=torch.long), torch.zeros(64, 5, 2))

    def passed(n, threshold):
        with torch.inference_mode():
            return set(_score_crops(n, [image], cands, size, threshold, 16, None, name == "onet")[0].tolist())

    def outputs(n, threshold):
        with torch.inference_mode():
            return _score_crops(n, [image], cands, size, threshold, 16, None, name == "onet")[2:]

    with torch.inference_mode():
        crops, _ = crop_candidates([image], cands, size)
        p32 = torch.softmax(fp32(crops)[0], 1)[:, 1]
        p16 = torch.softmax(bf16(crops)[0], 1)[:, 1]
    between = ((p32 + p16) / 2)[(p32 - p16).abs() > 1e-4]
    assert between.numel() >= 5
    flips = 0
    for t in between.tolist():
        assert passed(checked, t) == passed(fp32, t)
        flips += passed(bf16, t) != passed(fp32, t)
    assert flips >= 5  # plain bf16 really decides these windows differently
    # A window the check re-ran carries float32's outputs; the others keep bf16's, close to them.
    t = float(between.median())
    for got, want in zip(outputs(checked, t), outputs(fp32, t)):
        if want is not None:
            assert got.shape == want.shape and torch.allclose(got, want, atol=0.05 * float(want.abs().max()))
