"""The net registry: one spec per net, read by checkpoints; a mismatch is refused."""

from pathlib import Path

import pytest
import torch
from torch import nn

from mtcnn.nets import NetSpec, build_net, get_net_spec, net_names, register_net
from mtcnn.nets import registry
from mtcnn.weights import WeightsError, load_bundle, load_net, make_checkpoint

ORIGINAL = Path(__file__).resolve().parents[2] / "third_party" / "mtcnn_original.pt"


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


class TinyGrey(nn.Module):
    def __init__(self, points: int = 68):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 13 * 13, 2 * points))

    def forward(self, x):
        return self.body(x)


def test_mtcnn_specs_match_the_nets():
    for name, size in (("pnet", 12), ("rnet", 24), ("onet", 48)):
        spec = get_net_spec(name)
        assert spec.input_size == (size, size) and spec.in_channels == 3
        cls, box, lmk = build_net(name).eval()(torch.zeros(2, spec.in_channels, *spec.input_size))
        widths = [o.reshape(2, -1).shape[1] for o in (cls, box, lmk)]
        assert widths == [spec.head_width(h) for h in spec.heads] == [2, 4, 10]
    assert net_names()[:3] == ("pnet", "rnet", "onet")


def test_a_new_grey_landmark_net_round_trips_through_a_checkpoint(scratch_registry):
    spec = register_net(NetSpec("grey68", TinyGrey, (15, 15), channels="grey", heads=("landmark",), num_landmarks=68))
    model = build_net("grey68")
    out = model(torch.zeros(3, spec.in_channels, *spec.input_size))
    assert out.shape == (3, spec.head_width("landmark")) == (3, 136)
    ckpt = make_checkpoint("grey68", model)
    assert ckpt["preprocessing"]["channel_order"] == "GREY"
    loaded = load_net(ckpt, "grey68", "g.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # The same name re-registered with another input size refuses the old checkpoint.
    register_net(NetSpec("grey68", TinyGrey, (39, 39), channels="grey", heads=("landmark",), num_landmarks=68),
                 replace=True)
    with pytest.raises(WeightsError, match=r"g.pt: grey68 spec input_size=\[15, 15\] differs"):
        load_net(ckpt, "grey68", "g.pt")


def test_registering_a_different_spec_twice_fails(scratch_registry):
    register_net(NetSpec("x", TinyGrey, (15, 15), channels="grey", heads=("landmark",)))
    with pytest.raises(ValueError, match="already registered"):
        register_net(NetSpec("x", TinyGrey, (16, 16), channels="grey", heads=("landmark",)))


@pytest.mark.parametrize("kwargs,message", [
    ({"channels": "bgr"}, "channels"), ({"heads": ("cls", "mask")}, "heads"), ({"heads": ()}, "heads"),
    ({"num_landmarks": 0}, "num_landmarks"), ({"input_size": (0, 12)}, "input_size"),
])
def test_bad_specs_are_refused(kwargs, message):
    args = {"name": "bad", "factory": TinyGrey, "input_size": (12, 12), **kwargs}
    with pytest.raises(ValueError, match=message):
        NetSpec(**args)


def test_checkpoint_records_spec_and_refuses_a_changed_one():
    ckpt = make_checkpoint("rnet", build_net("rnet"))
    assert ckpt["spec"] == get_net_spec("rnet").to_dict()
    ckpt["spec"]["num_landmarks"] = 68
    with pytest.raises(WeightsError, match="num_landmarks=68 differs"):
        load_net(ckpt, "rnet", "r.pt")
    old_style = make_checkpoint("rnet", build_net("rnet"))
    del old_style["spec"]  # written before the registry existed: still loads
    load_net(old_style, "rnet", "r.pt")


@pytest.mark.weights
def test_converted_original_weights_still_load():
    if not ORIGINAL.exists():
        pytest.skip("third_party/mtcnn_original.pt not converted")
    nets, info = load_bundle(ORIGINAL)
    assert set(nets) == {"pnet", "rnet", "onet"} and len(info["sha256"]) == 12


def test_stages_read_the_registry():
    from mtcnn import stages

    assert (stages.RNET_SIZE, stages.ONET_SIZE) == (24, 48)
    assert (stages.PIXEL_MEAN, stages.PIXEL_SCALE) == (127.5, 1 / 128)
    pixels = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1)
    assert torch.equal(stages.normalise(pixels).flatten(), torch.tensor([-127.5 / 128, 0.0, 127.5 / 128]))
