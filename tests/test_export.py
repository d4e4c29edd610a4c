import json

import numpy as np
import pytest
import torch

from mtcnn.commands.export import main as export_main
from mtcnn.export import INPUT_NAME, OPSET, ExportError, export_bundle, max_differences, onnx_bytes, run_exported, torchscript_bytes
from mtcnn.nets import build_net
from mtcnn.weights import NET_NAMES


def random_nets(seed=0):
    torch.manual_seed(seed)
    return {name: build_net(name).eval() for name in NET_NAMES}


def probe_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "pnet": [torch.rand(1, 3, 37, 61, generator=g) * 2 - 1, torch.rand(3, 3, 12, 13, generator=g) * 2 - 1],
        "rnet": [torch.rand(7, 3, 24, 24, generator=g) * 2 - 1, torch.rand(1, 3, 24, 24, generator=g) * 2 - 1],
        "onet": [torch.rand(5, 3, 48, 48, generator=g) * 2 - 1, torch.rand(1, 3, 48, 48, generator=g) * 2 - 1],
    }


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_round_trip_every_net_with_dynamic_shapes(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    nets = random_nets()
    results = export_bundle(nets, tmp_path, fmt, probe_inputs(), {"path": "random", "sha256": "x"})
    assert [r.name for r in results] == list(NET_NAMES)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["opset"] == (OPSET if fmt == "onnx" else None)
    for r in results:
        assert max(r.max_abs_diff.values()) < 1e-4
        assert r.input["name"] == INPUT_NAME and list(r.outputs) == ["cls", "box", "landmark"]
    # Sizes and batches never seen at export time; compared with an independent PyTorch run.
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    x = torch.rand(2, 3, 50, 33) * 2 - 1
    got = run_exported(tmp_path / f"pnet{suffix}", fmt, x)
    with torch.no_grad():
        want = nets["pnet"](x)
    assert [tuple(g.shape) for g in got] == [(2, 2, 20, 12), (2, 4, 20, 12), (2, 10, 20, 12)]
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))


def test_a_file_from_other_weights_fails_verification(tmp_path):
    pytest.importorskip("onnxruntime")
    nets, others = random_nets(0), random_nets(1)
    blob = onnx_bytes(others["rnet"], "rnet")
    assert max(max_differences(nets["rnet"], "rnet", blob, "onnx", probe_inputs()["rnet"][0]).values()) > 1e-3

    # Verification inside export_bundle refuses such a file and writes nothing.
    class Wrong(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nets["rnet"]

        def forward(self, x):
            return tuple(t + 1e-3 for t in self.net(x))

    with pytest.raises(ExportError, match="rnet: exported onnx differs"):
        import mtcnn.export as export

        original = export.onnx_bytes
        export.onnx_bytes = lambda net, name: original(Wrong().eval(), name)
        try:
            export_bundle({"rnet": nets["rnet"]}, tmp_path / "out", "onnx", {"rnet": probe_inputs()["rnet"]})
        finally:
            export.onnx_bytes = original
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="unknown format"):
        export_bundle(nets, tmp_path / "out", "tflite")


def test_export_leaves_the_callers_net_untouched():
    net = build_net("onet").to(memory_format=torch.channels_last).eval()
    torchscript_bytes(net, "onet")
    assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last) and not net.training


@pytest.mark.weights
@pytest.mark.data
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_tool_on_original_weights_and_real_crops(fmt, original_weights, shared_data, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    photo = shared_data / "dlib_faces" / "2008_002506.jpg"
    code = export_main(["--format", fmt, "--out", str(tmp_path), "--weights", str(original_weights), "--image", str(photo)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for net in manifest["nets"]:
        assert (tmp_path / net["file"]).is_file()
        assert max(net["max_abs_diff"].values()) < 1e-4
        assert net["verified_on"], "the tool must run the exported files"
    rnet = next(n for n in manifest["nets"] if n["name"] == "rnet")
    assert int(rnet["verified_on"][0].split("x")[0]) > 10  # a batch of real candidate crops


def test_export_tool_bad_weights_is_one_line(tmp_path, capsys):
    assert export_main(["--format", "torchscript", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.pt" in err
    assert not (tmp_path / "o").exists()


def test_export_tool_exports_the_calibrating_cascade(shared_data, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from mtcnn.weights import make_checkpoint

    folder = tmp_path / "pcn"
    folder.mkdir()
    torch.manual_seed(0)
    nets = {name: build_net(name).eval() for name in ("pcn1", "pcn2", "pcn3")}
    for name, net in nets.items():
        torch.save(make_checkpoint(name, net), folder / f"{name}.pt")
    photo = shared_data / "dlib_faces" / "2008_002506.jpg"
    out = tmp_path / "onnx"
    assert export_main(["--format", "onnx", "--out", str(out), "--pcn", str(folder), "--image", str(photo)]) == 0, capsys.readouterr().err
    manifest = {n["name"]: n for n in json.loads((out / "manifest.json").read_text())["nets"]}
    assert {k: list(v["outputs"]) for k, v in manifest.items()} == {
        "pcn1": ["cls", "box", "flip"], "pcn2": ["cls", "box", "turn"], "pcn3": ["cls", "box", "angle"]}
    assert all(v["verified_on"] and max(v["max_abs_diff"].values()) < 1e-4 for v in manifest.values())
    # The stage-1 file at a size never seen at export: maps of every head, as PyTorch's.
    x = torch.rand(1, 3, 41, 29) * 2 - 1
    got = run_exported(out / "pcn1.onnx", "onnx", x)
    with torch.no_grad():
        want = nets["pcn1"](x)
    assert [tuple(g.shape) for g in got] == [(1, 2, 16, 10), (1, 4, 16, 10), (1, 2, 16, 10)]  # ceil((n - 2) / 2) - 4
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))
