"""The Sun et al. cascade nets: shapes and parameter counts of SPEC §7, the locally shared layer
against a loop over output positions, the fused patch nets against the separate ones."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.nets import build_net, get_net_spec
from mtcnn.nets.cascade import (
    CASCADE_NETS, FusedPatchNets, LevelOneInference, LocallySharedConv2d, PhaseConvPool, build_cascade_net,
    max_pool_2x2, nets_of_level, standardise,
)  # fmt: skip


@pytest.mark.parametrize("name,count", [("F1", 88_250), ("EN1", 65_226), ("NM1", 65_226), ("LE21", 17_362), ("RM32", 17_362)])
def test_parameter_counts_match_spec(name, count):
    assert sum(p.numel() for p in build_cascade_net(name).parameters()) == count


def test_23_nets_registered_with_their_inputs_and_outputs():
    assert len(CASCADE_NETS) == 23
    assert [len(nets_of_level(k)) for k in (1, 2, 3)] == [3, 10, 10]
    for name, spec in CASCADE_NETS.items():
        reg = get_net_spec(spec.registry_name)
        assert reg.input_size == spec.input_hw and reg.channels == "grey" and reg.num_landmarks == len(spec.points)
        for variant in ("relu", "abs_tanh"):
            net = build_net(spec.registry_name, variant=variant).eval()
            out = net(torch.randn(3, 1, *spec.input_hw))
            assert out.shape == (3, 2 * len(spec.points)), (name, variant)
    assert CASCADE_NETS["EN1"].input_hw == (31, 39) and CASCADE_NETS["LE31"].half_size == 0.12
    assert nets_of_level(2, ["LE", "N"]) == ["LE21", "N21", "LE22", "N22"]
    with pytest.raises(ValueError, match="unknown point"):
        nets_of_level(3, ["XX"])


def _loop_reference(layer: LocallySharedConv2d, x: torch.Tensor) -> torch.Tensor:
    """Each output position: the dot product of its window with its own region's kernel."""
    k = layer.kernel_size
    region = layer.region_of()
    oh, ow = layer.out_hw
    out = torch.zeros(x.shape[0], layer.out_channels, oh, ow, dtype=torch.float64)
    for i in range(oh):
        for j in range(ow):
            r = int(region[i, j])
            window = x[:, :, i : i + k, j : j + k].double()
            out[:, :, i, j] = torch.einsum("nchw,ochw->no", window, layer.weight[r].double()) + layer.bias[r].double()
    return out


@pytest.mark.parametrize("hw,k,regions", [((39, 39), 4, (2, 2)), ((8, 12), 3, (3, 3)), ((31, 39), 4, (2, 3)), ((5, 5), 2, (1, 1))])
def test_locally_shared_conv_equals_loop_reference(hw, k, regions):
    torch.manual_seed(0)
    layer = LocallySharedConv2d(3, 5, k, hw, regions)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, *hw)
    torch.testing.assert_close(layer(x).double(), _loop_reference(layer, x), atol=1e-5, rtol=1e-5)


def test_locally_shared_regions_really_differ_and_one_region_is_a_conv():
    torch.manual_seed(1)
    shared = LocallySharedConv2d(2, 4, 3, (10, 10), (1, 1))
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(shared.weight[0])
        conv.bias.copy_(shared.bias[0])
    x = torch.randn(2, 2, 10, 10)
    torch.testing.assert_close(shared(x), conv(x), atol=1e-5, rtol=1e-5)
    # Changing one region's kernel changes exactly that region's outputs.
    local = LocallySharedConv2d(1, 1, 2, (10, 10), (2, 2))
    before = local(x[:, :1]).detach()
    with torch.no_grad():
        local.weight[3].add_(1.0)
    changed = (local(x[:, :1]).detach() - before).abs()[0, 0] > 0
    assert torch.equal(changed, local.region_of() == 3)


def test_locally_shared_gradients_reach_every_region():
    layer = LocallySharedConv2d(1, 2, 3, (9, 9), (3, 3))
    layer(torch.randn(2, 1, 9, 9)).sum().backward()
    assert (layer.weight.grad.abs().flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize("variant", ["relu", "abs_tanh"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_patch_nets_equal_the_separate_nets(variant, layout):
    torch.manual_seed(2)
    names = nets_of_level(2)
    nets = [build_cascade_net(n, variant).eval() for n in names]
    fused = FusedPatchNets(nets).to(memory_format=layout).eval()
    x = torch.rand(7, len(names), 15, 15) * 2 - 1
    expected = torch.stack([net(x[:, g : g + 1]) for g, net in enumerate(nets)], dim=1)
    torch.testing.assert_close(fused(x.contiguous(memory_format=layout)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["F1", "EN1", "NM1"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_level_one_inference_equals_the_trained_net(name, layout):
    torch.manual_seed(6)
    net = build_cascade_net(name).eval()
    fast = LevelOneInference(net).to(memory_format=layout).eval()
    x = torch.rand(9, 1, *CASCADE_NETS[name].input_hw) * 255  # raw grey levels: eps is one grey level
    with torch.no_grad():
        torch.testing.assert_close(fast(x, eps=1.0), net((x - 127.5) / 128), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="relu"):
        LevelOneInference(build_cascade_net(name, "abs_tanh"))


@pytest.mark.parametrize("hw", [(39, 39), (31, 39), (15, 15), (16, 13)])
def test_phase_conv_pool_is_conv_then_max_pool(hw):
    torch.manual_seed(7)
    conv = nn.Conv2d(1, 5, 4)
    x = torch.randn(3, 1, *hw)
    with torch.no_grad():
        torch.testing.assert_close(PhaseConvPool(conv)(x), F.max_pool2d(conv(x), 2), atol=1e-5, rtol=1e-5)


def test_strided_max_pool_is_bit_identical():
    x = torch.randn(2, 3, 13, 10)
    assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
    assert torch.equal(max_pool_2x2(x.contiguous(memory_format=torch.channels_last)), F.max_pool2d(x, 2))


def test_standardise_ignores_brightness_and_contrast():
    x = torch.rand(4, 1, 15, 15)
    torch.testing.assert_close(standardise(x * 3 + 0.5, eps=0), standardise(x, eps=0), atol=1e-5, rtol=1e-5)
    net = build_cascade_net("F1").eval()
    x = torch.rand(4, 1, 39, 39)
    torch.testing.assert_close(net(x * 2 - 0.3), net(x), atol=2e-3, rtol=1e-3)


def test_standardise_equals_the_textbook_formula():
    """An oracle for the two-pass form: (x - mean) / (population deviation + eps), on raw
    0..255 crops (what the inference forms feed it), a flat crop, and a non-contiguous slice."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 39, 39, generator=g, dtype=torch.float64).float() * 255
    x[2] = 77.0
    for crops in (x, x[:, :, :31]):
        flat = crops.reshape(crops.shape[0], -1).double()
        mean, std = flat.mean(1, keepdim=True), flat.std(1, unbiased=False, keepdim=True)
        expected = ((flat - mean) / (std + 0.1)).reshape(crops.shape).float()
        torch.testing.assert_close(standardise(crops, eps=0.1), expected, atol=1e-5, rtol=1e-5)


def test_abs_tanh_variant_is_nonnegative_and_locally_shared():
    net = build_cascade_net("F1", "abs_tanh")
    convs = [m for m in net.modules() if isinstance(m, LocallySharedConv2d)]
    assert [c.regions for c in convs] == [(2, 2), (2, 2), (3, 3), (1, 1)]
    hidden = net.body(torch.randn(2, 1, 39, 39))
    assert (hidden >= 0).all()
    assert F.relu(-hidden).sum() == 0
