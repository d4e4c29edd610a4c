import pytest
import torch

from mtcnn.nets import ONet, PNet, RNet, build_net


@pytest.mark.parametrize("name,count", [("pnet", 6962), ("rnet", 101468), ("onet", 389040)])
def test_parameter_counts(name, count):
    assert sum(p.numel() for p in build_net(name).parameters()) == count


def test_output_shapes_at_native_sizes():
    cls, box, lm = PNet()(torch.zeros(2, 3, 12, 12))
    assert (cls.shape, box.shape, lm.shape) == ((2, 2, 1, 1), (2, 4, 1, 1), (2, 10, 1, 1))
    for net, size in ((RNet(), 24), (ONet(), 48)):
        cls, box, lm = net.eval()(torch.zeros(3, 3, size, size))
        assert (cls.shape, box.shape, lm.shape) == ((3, 2), (3, 4), (3, 10))


@pytest.mark.parametrize("h,w", [(12, 12), (13, 13), (100, 77), (31, 240)])
def test_pnet_any_size_uses_ceil_pooling(h, w):
    cls, _, _ = PNet()(torch.zeros(1, 3, h, w))
    expected = lambda n: -(-(n - 2) // 2) - 4  # noqa: E731  conv3 -> ceil pool2 -> conv3 -> conv3
    assert cls.shape[2:] == (expected(h), expected(w))


def test_landmarks_can_be_skipped():
    assert PNet()(torch.zeros(1, 3, 12, 12), with_landmarks=False)[2] is None


def test_unknown_net_name():
    with pytest.raises(ValueError, match="unknown net 'qnet'"):
        build_net("qnet")
