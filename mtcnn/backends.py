"""Backends: what runs a net's arithmetic. Everything else (pyramid, crops, NMS, decoding) is
the same stage code for every backend (:mod:`mtcnn.stages`).

* ``"torch"``: the PyTorch module itself, in channels-last layout (see
  :func:`mtcnn.stages.prepare_for_inference`).
* ``"onnxruntime"``: the net exported to ONNX in memory (:func:`mtcnn.export.onnx_bytes`) and
  run by an onnxruntime CPU session; an optional extra (``pip install -e ".[onnx]"``).

A backend net is called like the PyTorch net: ``net(x, with_landmarks=...)`` returns the heads
``(cls, box, landmark)`` as torch tensors, ``landmark`` None when not asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.export import INPUT_NAME, ONNX_HINT, ExportError, onnx_bytes, onnx_session, output_names

BACKENDS = ("torch", "onnxruntime")


class OnnxRuntimeNet:
    """One net as an onnxruntime session, called like the PyTorch net."""

    def __init__(self, net: nn.Module, name: str, threads: int | None = None):
        self.name = name
        self.session = onnx_session(onnx_bytes(net, name), threads)
        self.heads = output_names(name)
        self._without_landmarks = [h for h in self.heads if h != "landmark"]

    def __call__(self, x: torch.Tensor, with_landmarks: bool = True):
        wanted = self.heads if with_landmarks else self._without_landmarks
        # onnxruntime reads plain NCHW float32 memory; the stages hand over channels-last.
        feed = {INPUT_NAME: x.detach().float().contiguous().numpy()}
        outputs = dict(zip(wanted, self.session.run(wanted, feed)))
        return tuple(torch.from_numpy(outputs[h]) if h in outputs else None for h in self.heads)


def check_backend(backend: str, device: torch.device) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU, not {device}; use device='cpu' or backend='torch'")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ExportError(f"backend 'onnxruntime': {ONNX_HINT}") from None


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_precision(precision: str | None, device: torch.device | str, backend: str = "torch") -> str:
    """``"auto"`` (or None): ``"bfloat16"`` for the torch backend on a CPU that computes bf16
    natively (:func:`mtcnn.device.native_bfloat16`, with PyTorch's oneDNN), else ``"float32"``.
    An explicit ``"float32"`` or ``"bfloat16"`` is returned as it is."""
    if precision is None or precision == "auto":
        from mtcnn.device import native_bfloat16

        native = torch.device(device).type == "cpu" and backend == "torch" and torch.backends.mkldnn.is_available() and native_bfloat16()
        return "bfloat16" if native else "float32"
    return precision


def backend_nets(nets: dict[str, nn.Module], names: tuple[str, ...], backend: str, device: torch.device,
                 precision: str = "float32") -> list:
    """The nets ``names`` ready to run on ``backend`` (callables with the PyTorch net's
    interface), in ``precision`` ("float32", or "bfloat16": crop nets, torch backend, CPU)."""
    from mtcnn.stages import prepare_for_inference

    check_backend(backend, device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "float32" and backend != "torch":
        raise ValueError(f"precision {precision!r} runs on the torch backend only, not {backend!r}")
    if backend == "torch" and precision != "float32":
        # Reduced precision decides nothing by itself: windows near a threshold are re-run in float32.
        from mtcnn.ops.inference import CheckedNet

        return [CheckedNet(prepare_for_inference(nets[k], device, PRECISIONS[precision]), prepare_for_inference(nets[k], device))
                for k in names]  # fmt: skip
    if backend == "torch":
        return [prepare_for_inference(nets[k], device, PRECISIONS[precision]) for k in names]
    return [OnnxRuntimeNet(nets[k], k) for k in names]
