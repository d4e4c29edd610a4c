"""The landmark zoo's nets: the MobileNet-V2 of SPEC §8 against its table, the 68-point models' sizes."""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.nets import build_net, get_net_spec
from mtcnn.nets.mobilenet import InvertedResidual


def _count(model: nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return params, stats


def _table_param_count() -> tuple[int, int]:
    """SPEC §8's table written out by hand: bias-free convs, BN (γ, β), FC 576→256→10."""
    params = stats = 0

    def conv_bn(c_in, c_out, k=1, groups=1):
        nonlocal params, stats
        params += c_out * (c_in // groups) * k * k + 2 * c_out
        stats += 2 * c_out

    conv_bn(3, 16, 3)
    c = 16
    for expanded, c_out in ((96, 24), (144, 24), (144, 32), (192, 32), (192, 64), (192, 64)):
        conv_bn(c, expanded)
        conv_bn(expanded, expanded, 3, groups=expanded)
        conv_bn(expanded, c_out)
        c = c_out
    params += (64 * 3 * 3) * 256 + 256 + 256 * 10 + 10
    return params, stats


def test_mobilenet_matches_the_table():
    model = build_net("mobilenet_l1")
    params, stats = _count(model)
    assert (params, stats) == _table_param_count() == (237_818, 4_352)
    # ≈ 946 KiB as float32, the original's "≈ 950 KB"
    assert 940_000 < 4 * (params + stats) < 1_000_000
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert [b.residual for b in blocks] == [False, True] * 3  # residual only on each stage's s=1 block
    assert [b.body[0][0].out_channels for b in blocks] == [96, 144, 144, 192, 192, 192]
    assert [b.body[2][0].out_channels for b in blocks] == [24, 24, 32, 32, 64, 64]
    # projections are linear: conv + BN, no ReLU
    assert all(len(b.body[2]) == 2 for b in blocks)
    dropout = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropout] == [0.3]
    model.eval()
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 10)


def test_mobilenet_levels_are_registered_with_the_original_preprocessing():
    for name in ("mobilenet_l1", "mobilenet_l2"):
        spec = get_net_spec(name)
        assert spec.input_size == (48, 48) and spec.channels == "rgb" and spec.num_landmarks == 5
        assert (spec.mean, spec.scale) == (127.5, 1.0)  # mean subtracted, no scaling (SPEC §8)


def test_68_point_models_sizes_and_outputs():
    baseline, compact = build_net("kp68_baseline"), build_net("kp68_compact")
    n_base, n_compact = (sum(p.numel() for p in m.parameters()) for m in (baseline, compact))
    assert 9.3e6 < n_base < 9.5e6  # the seed's ≈ 9.4 M
    assert n_compact <= 1.5e6 and n_compact <= n_base / 6
    baseline.eval(), compact.eval()
    assert baseline(torch.zeros(1, 1, 224, 224)).shape == (1, 136)
    assert compact(torch.zeros(2, 3, 64, 64)).shape == (2, 136)
    grey = build_net("kp68_compact_grey").eval()
    assert grey(torch.zeros(2, 1, 64, 64)).shape == (2, 136)
    assert get_net_spec("kp68_baseline").channels == "grey" and get_net_spec("kp68_baseline").input_size == (224, 224)
    assert 56 <= get_net_spec("kp68_compact").input_size[0] <= 112
    assert get_net_spec("kp68_compact").num_landmarks == 68
