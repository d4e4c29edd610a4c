"""Export the nets of a weights bundle to ONNX or TorchScript, and check the files against PyTorch.

Every exported net takes one input and returns its heads in the registry's order
(:attr:`mtcnn.nets.NetSpec.heads`):

========  ==========================  =============================================
name      shape                       meaning
========  ==========================  =============================================
input     ``[batch, C, H, W]`` float  ``(pixel - mean) * scale`` (the spec's; RGB)
cls       ``[batch, 2(, h, w)]``      face / non-face logits (softmax -> probability)
box       ``[batch, 4(, h, w)]``      box offsets (SPEC §11)
landmark  ``[batch, 10(, h, w)]``     landmark offsets, interleaved x, y
========  ==========================  =============================================

The rotation-calibrating nets (``pcn1``-``pcn3``, :mod:`mtcnn.nets.pcn`) return ``cls``, ``box``
and their orientation head instead of ``landmark``: ``flip`` ``[batch, 2(, h, w)]`` (up / down
logits), ``turn`` ``[batch, 3]`` (-90° / 0° / +90° logits) or ``angle`` ``[batch, 1]`` (degrees / 45).

A fully convolutional net (P-Net) has dynamic ``batch``, ``height`` and ``width`` and returns
maps; the others have a dynamic ``batch`` and a fixed crop size. ONNX files use opset
:data:`OPSET` (TorchScript-based exporter: no extra dependency beyond ``onnx``); TorchScript
files are traced and load with ``torch.jit.load``. A ``manifest.json`` next to the files records
formats, names, shapes, preprocessing, the weights' hash and the verification result.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtcnn.atomic import atomic_write_bytes, atomic_write_text
from mtcnn.errors import MTCNNError
from mtcnn.nets import get_net_spec

OPSET = 17
INPUT_NAME = "input"
FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
# Exported heads must agree with PyTorch to this (max absolute difference, on real crops).
TOLERANCE = 1e-4
ONNX_HINT = 'onnxruntime is not installed: pip install -e ".[onnx]" (or pip install onnx onnxruntime)'


class ExportError(MTCNNError, RuntimeError):
    """An export or its verification failed, or onnxruntime is missing; ``str(e)`` is one line (exit 1)."""


class AllHeads(nn.Module):
    """A net returning every head as a tuple (what an exported graph's outputs are)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def output_names(name: str) -> list[str]:
    return list(get_net_spec(name).heads)


def dynamic_axes(name: str) -> dict[str, dict[int, str]]:
    spec = get_net_spec(name)
    axes = {0: "batch", 2: "height", 3: "width"} if spec.fully_convolutional else {0: "batch"}
    return {INPUT_NAME: axes, **{head: dict(axes) for head in spec.heads}}


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    """A tracing input: the crop size (twice it for a fully convolutional net)."""
    spec = get_net_spec(name)
    h, w = spec.input_size
    k = 2 if spec.fully_convolutional else 1
    return torch.zeros((batch, spec.in_channels, h * k + (k - 1), w * k + (k - 1)))


def onnx_bytes(net: nn.Module, name: str) -> bytes:
    """``net`` (a registered kind ``name``) as an ONNX model in memory, on the CPU, in fp32."""
    net = _cpu_fp32_eval(net)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; these small static graphs export exactly either way.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            AllHeads(net), (example_input(name),), buffer, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=output_names(name), dynamic_axes=dynamic_axes(name),
        )  # fmt: skip
    return buffer.getvalue()


def torchscript_bytes(net: nn.Module, name: str) -> bytes:
    net = _cpu_fp32_eval(net)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(AllHeads(net), (example_input(name),), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _cpu_fp32_eval(net: nn.Module) -> nn.Module:
    import copy

    from mtcnn.ops.inference import restore_layers

    # A copy: the caller's net keeps its device, dtype, memory format and layers.
    net = copy.deepcopy(net).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
    return restore_layers(net)


def run_exported(data: bytes | str | os.PathLike, fmt: str, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Run an exported file (or its bytes) on ``inputs``: onnxruntime for ONNX, torch.jit for TorchScript."""
    if isinstance(data, (str, os.PathLike)):
        data = Path(data).read_bytes()
    if fmt == "onnx":
        session = onnx_session(data)
        outputs = session.run(None, {INPUT_NAME: inputs.detach().cpu().float().contiguous().numpy()})
        return [torch.from_numpy(o) for o in outputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return list(module(inputs.detach().cpu().float().contiguous()))


def onnx_session(model: bytes, threads: int | None = None):
    """An onnxruntime CPU session for an ONNX model in memory; one clear error without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(ONNX_HINT) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def max_differences(net: nn.Module, name: str, data: bytes, fmt: str, inputs: torch.Tensor) -> dict[str, float]:
    """Max |exported - PyTorch| per head on ``inputs``."""
    with torch.no_grad():
        expected = AllHeads(_cpu_fp32_eval(net))(inputs.float())
    got = run_exported(data, fmt, inputs)
    diffs = {}
    for head, e, g in zip(output_names(name), expected, got):
        if tuple(e.shape) != tuple(g.shape):
            raise ExportError(f"{name}.{head}: exported output has shape {tuple(g.shape)}, PyTorch {tuple(e.shape)}")
        diffs[head] = float((e - g).abs().max()) if e.numel() else 0.0
    return diffs


@dataclass
class ExportedNet:
    name: str
    file: str
    format: str
    input: dict
    outputs: dict
    preprocessing: dict
    max_abs_diff: dict | None
    verified_on: list[str]


def export_bundle(
    nets: dict[str, nn.Module],
    out_dir: str | os.PathLike,
    fmt: str,
    inputs: dict[str, list[torch.Tensor]] | None = None,
    weights_info: dict | None = None,
    tolerance: float = TOLERANCE,
) -> list[ExportedNet]:
    """Write ``<out_dir>/<net><suffix>`` for every net and ``manifest.json``.

    ``inputs``: per net, the tensors to verify the exported file on (each a batch); with
    ``inputs`` every file is run and must match PyTorch within ``tolerance`` (else
    :class:`ExportError` and nothing is written). Files are written only when all nets passed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    blobs, results = {}, []
    for name, net in nets.items():
        spec = get_net_spec(name)
        blob = onnx_bytes(net, name) if fmt == "onnx" else torchscript_bytes(net, name)
        diffs, shapes = None, []
        if inputs is not None:
            diffs = {head: 0.0 for head in spec.heads}
            for batch in inputs.get(name, []):
                for head, d in max_differences(net, name, blob, fmt, batch).items():
                    diffs[head] = max(diffs[head], d)
                shapes.append("x".join(map(str, batch.shape)))
            worst = max(diffs.values())
            if not np.isfinite(worst) or worst >= tolerance:
                raise ExportError(f"{name}: exported {fmt} differs from PyTorch by {worst:.3g} (limit {tolerance:g})")
        axes = dynamic_axes(name)
        shape = [axes[INPUT_NAME].get(i, d) for i, d in enumerate((1, spec.in_channels, *spec.input_size))]
        out_shapes = {head: [axes[head].get(0), spec.head_width(head)] + (["h", "w"] if spec.fully_convolutional else []) for head in spec.heads}
        blobs[name] = blob
        results.append(ExportedNet(
            name=name, file=f"{name}{SUFFIX[fmt]}", format=fmt, input={"name": INPUT_NAME, "shape": shape},
            outputs=out_shapes, preprocessing=spec.preprocessing(), max_abs_diff=diffs, verified_on=shapes,
        ))  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        atomic_write_bytes(out_dir / f"{name}{SUFFIX[fmt]}", blob)
    manifest = {
        "format": fmt,
        "opset": OPSET if fmt == "onnx" else None,
        "torch": torch.__version__,
        "weights": (weights_info or {}).get("path"),
        "weights_sha256": (weights_info or {}).get("sha256"),
        "tolerance": tolerance,
        "nets": [asdict(r) for r in results],
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return results


def verification_inputs(nets: dict[str, nn.Module], image: np.ndarray, max_crops: int = 512) -> dict[str, list[torch.Tensor]]:
    """Real inputs from one RGB photo: two pyramid levels for a fully convolutional net, and
    for the others the crops of the photo's P-Net candidates (what R/O-Net see in the cascade)
    at each net's crop size."""
    from mtcnn.stages import crop_candidates, normalise, prepare_for_inference, run_pnet, run_proposals_with_head
    from mtcnn.stages import _resize_level as resize_level

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    first = next((k for k in nets if get_net_spec(k).fully_convolutional), None)
    candidates = None
    if first is not None:
        proposer = prepare_for_inference(_cpu_fp32_eval(nets[first]), "cpu")
        if get_net_spec(first).heads[2] == "landmark":
            candidates = run_pnet(proposer, [pixels], threshold=0.5)
        else:  # the rotation-calibrating stage 1: its third head is the flip
            candidates = run_proposals_with_head(proposer, [pixels], threshold=0.5)[0]
    inputs: dict[str, list[torch.Tensor]] = {}
    for name in nets:
        spec = get_net_spec(name)
        if spec.fully_convolutional:
            levels = [(round(height * s), round(width * s)) for s in (0.6, 0.6 * 0.709**3)]
            batches = [normalise(resize_level(pixels, h, w)).contiguous() for h, w in levels]
        elif candidates is not None and len(candidates):
            crops, _ = crop_candidates([pixels], candidates.select(torch.arange(min(len(candidates), max_crops))), spec.crop_size)
            batches = [crops.contiguous(), crops[:1].contiguous()]
        else:
            raise ExportError(f"{name}: no P-Net candidates in the photo to verify on (use a photo with faces)")
        if spec.in_channels == 1:
            batches = [b.mean(dim=1, keepdim=True) for b in batches]
        inputs[name] = batches
    return inputs
