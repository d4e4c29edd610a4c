import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.nets import build_net
from mtcnn.ops.inference import MaxPool2x2, speed_up_layers


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
