import sys

import numpy as np
import pytest
import torch

from mtcnn import MTCNN
from mtcnn.eval.parity import compare_detections
from mtcnn.io import read_image_rgb
from mtcnn.nets import build_net
from mtcnn.structures import Detections
from mtcnn.weights import NET_NAMES


def random_nets(seed=0):
    torch.manual_seed(seed)
    return {name: build_net(name) for name in NET_NAMES}


def test_parity_oracle_on_exact_cases():
    box = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    a = Detections(box, torch.tensor([0.9]), torch.zeros(1, 5, 2))
    assert compare_detections([a], [a]).same
    # IoU exactly 0.95: a box shrunk to 95% of the area inside the original.
    shrunk = Detections(torch.tensor([[10.0, 10.0, 48.0, 60.0]]), torch.tensor([0.9]), torch.zeros(1, 5, 2))
    assert compare_detections([a], [shrunk]).same
    assert not compare_detections([a], [shrunk], iou=0.951).same
    off = Detections(box, torch.tensor([0.9011]), torch.zeros(1, 5, 2))
    assert not compare_detections([a], [off]).same
    assert not compare_detections([a], [Detections.empty()]).same


def test_onnxruntime_backend_matches_torch_on_random_nets():
    pytest.importorskip("onnxruntime")
    nets = random_nets()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((120, 90), (64, 200))]
    kwargs = dict(nets=nets, thresholds=(0.0, 0.0, 0.0), min_face_size=24, device="cpu")
    reference = MTCNN(**kwargs).detect(images)
    got = MTCNN(**kwargs, backend="onnxruntime").detect(images)
    parity = compare_detections(reference, got)
    assert parity.reference_faces > 0 and parity.same, parity.line()
    for a, b in zip(reference, got):
        assert torch.allclose(a.landmarks, b.landmarks, atol=1e-2)


def test_without_onnxruntime_the_option_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[onnx\]"'):
        MTCNN(nets=random_nets(), device="cpu", backend="onnxruntime")
    assert len(MTCNN(nets=random_nets(), device="cpu").detect(np.zeros((50, 50, 3), np.uint8))[0]) == 0
    with pytest.raises(ValueError, match="choose one of torch, onnxruntime"):
        MTCNN(nets=random_nets(), device="cpu", backend="tensorrt")


@pytest.mark.weights
@pytest.mark.data
@pytest.mark.slow
def test_same_detections_on_dlib_and_face_mask_photos(original_weights, shared_data):
    pytest.importorskip("onnxruntime")
    from mtcnn.data.annotations import read_voc_dir, split_by_name

    torch_det = MTCNN(weights=original_weights, device="cpu")
    ort_det = MTCNN(weights=original_weights, device="cpu", backend="onnxruntime")
    assert ort_det.settings["backend"] == "onnxruntime"
    dlib = sorted((shared_data / "dlib_faces").glob("*.jpg"))
    # The whole validation split is checked for the README; a third of it here keeps CI short.
    masks = [r.path for r in split_by_name(read_voc_dir(shared_data / "face_mask" / "annotations"), "val")][::3]
    for paths in (dlib, masks):
        images = [read_image_rgb(p) for p in paths]
        parity = compare_detections(torch_det.detect(images), ort_det.detect(images))
        assert parity.reference_faces > 20 and parity.same, parity.line()


@pytest.mark.weights
@pytest.mark.data
def test_bfloat16_onet_keeps_the_dlib_detections(original_weights, shared_data):
    from mtcnn.ops.inference import CheckedNet

    fp32 = MTCNN(weights=original_weights, device="cpu")
    bf16 = MTCNN(weights=original_weights, device="cpu", precision="bfloat16")
    assert bf16.settings["precision"] == "bfloat16" and fp32.settings["precision"] == "float32"
    assert isinstance(bf16.onet, CheckedNet) and bf16.onet.fast.dtype == torch.bfloat16
    images = [read_image_rgb(p) for p in sorted((shared_data / "dlib_faces").glob("*.jpg"))]
    reference, got = fp32.detect(images), bf16.detect(images)
    # Measured: worst IoU 0.925 and |Δscore| 5e-4 over 42 faces; float32 itself matches at 0.95 / 1e-3.
    parity = compare_detections(reference, got, iou=0.9, score_tol=0.01)
    assert parity.reference_faces > 30 and parity.same, parity.line()
    assert not compare_detections(reference, got, iou=0.999, score_tol=1e-6).same  # bf16 really ran


def test_precision_auto_is_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    """The default ``precision="auto"``: bfloat16 for the torch backend on a CPU with native bf16
    (AVX-512 BF16 / AMX), float32 elsewhere; an explicit precision always wins."""
    from mtcnn.backends import resolve_precision
    from mtcnn.ops.inference import CheckedNet

    monkeypatch.setenv("MTCNN_NATIVE_BF16", "1")
    assert resolve_precision("auto", "cpu") == "bfloat16" and resolve_precision(None, "cpu") == "bfloat16"
    assert resolve_precision("auto", "cpu", "onnxruntime") == "float32"
    assert resolve_precision("auto", "cuda") == "float32"
    assert resolve_precision("float32", "cpu") == "float32"
    det = MTCNN(nets=random_nets(), device="cpu")
    assert det.settings["precision"] == "bfloat16" and isinstance(det.onet, CheckedNet)
    assert MTCNN(nets=random_nets(), device="cpu", precision="float32").settings["precision"] == "float32"
    monkeypatch.setenv("MTCNN_NATIVE_BF16", "0")
    det = MTCNN(nets=random_nets(), device="cpu")
    assert det.settings["precision"] == "float32" and not isinstance(det.onet, CheckedNet)
    assert MTCNN(nets=random_nets(), device="cpu", precision="bfloat16").settings["precision"] == "bfloat16"


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("MTCNN_NATIVE_BF16")  # the real check, not the suite's float32 default (tests/conftest.py)
    from mtcnn.device import native_bfloat16
    try:
        flags = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
    except OSError:
        flags = ""
    assert native_bfloat16() == ("avx512_bf16" in flags.split() or "amx_bf16" in flags.split())
