"""Inference-only replacements of layers with faster, numerically identical ones.

:func:`speed_up_layers` swaps them into a net in place and :func:`restore_layers` swaps them
back (export traces the standard layers); the state dict is unchanged (none of the replaced
layers has parameters). On a CPU, :class:`OneDnnNet` wraps a whole three-head net instead
(:func:`restore_layers` unwraps it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class MaxPool2x2(nn.Module):
    """``MaxPool2d(2, 2, ceil_mode=True)`` as the maximum of four strided views.

    ATen's CPU max-pool also computes argmax indices, and for P-Net's 10-channel, channels-last
    maps it runs 4-6× slower than three ``torch.maximum`` calls (measured on 286×382 maps). The
    result is bit-identical: a ceil-mode window cut by the edge takes the max of what it covers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if (h | w) & 1:
            x = F.pad(x, (0, w & 1, 0, h & 1), value=float("-inf"))
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        bottom = torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2])
        return torch.maximum(top, bottom)


def _is_pair_pool(m: nn.Module) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        type(m) is nn.MaxPool2d and pair(m.kernel_size) == (2, 2) and pair(m.stride) == (2, 2)
        and pair(m.padding) == (0, 0) and pair(m.dilation) == (1, 1) and m.ceil_mode and not m.return_indices
    )  # fmt: skip


def speed_up_layers(net: nn.Module) -> nn.Module:
    """Replace every 2×2/stride-2 ceil-mode max-pool of ``net`` by :class:`MaxPool2x2`, in place."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if _is_pair_pool(child):
                setattr(parent, name, MaxPool2x2())
    return net


def restore_layers(net: nn.Module) -> nn.Module:
    """Undo :func:`speed_up_layers` (in place) and :func:`one_dnn_net` (returns the wrapped
    net): exporters know the standard layers."""
    if isinstance(net, CheckedNet):
        net = net.exact
    if isinstance(net, OneDnnNet):
        net = net.net
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MaxPool2x2):
                setattr(parent, name, nn.MaxPool2d(2, 2, ceil_mode=True))
    return net


class OneDnnNet(nn.Module):
    """A three-head net (``body`` Sequential, heads ``cls``, ``box``, ``landmark``) for CPU
    inference, with its heads fused into one matrix product.

    Crop nets (R/O-Net, Linear heads) run their convolutional part in oneDNN's blocked layout
    (``Tensor.to_mkldnn``). Why: the convolutions were already oneDNN's, but between them PReLU
    and max-pool ran as ATen kernels on channels-last tensors, and those memory-bound passes over
    the first layers' large maps cost about a third of R- and O-Net's time; in the blocked layout
    (channels in groups of 8) they run as oneDNN primitives (the max-pool computes no argmax
    indices), 10–15 % less time per net. The convolutions are the same oneDNN arithmetic (outputs
    agree to ~1e-6). The conversion back to dense happens where the net is narrowest, before
    ``Flatten``.

    P-Net (1×1 convolution heads) keeps its channels-last body: on its large pyramid maps the
    blocked layout was measured slower (docs/performance.md), so only its heads change: ATen
    ran the three 1×1 convolutions in its slow reference kernel, a single matrix product over the
    channels-last features is one fast GEMM.

    A max-pool after a PReLU whose slopes are all ≥ 0 runs before it (:func:`pool_before_monotone_prelu`):
    bit-identical, and the PReLU touches a quarter of the values. The shipped weights' first
    layers qualify (P-Net's first, R-Net's two, O-Net's three pooled layers); the original
    weights have negative slopes in every pooled layer and keep the written order.

    The state dict is the wrapped net's under ``net.``; the body's layers are used as they are,
    the heads' weights are copied into the fused matrix when wrapping (wrap a net you no longer
    train, as :func:`mtcnn.stages.prepare_for_inference` does). ``with_landmarks=False`` skips the
    landmark rows. Empty batches and non-float32 or non-CPU inputs run the wrapped net.

    ``dtype=torch.bfloat16`` (crop nets only) runs the blocked convolutional part in bfloat16:
    on a CPU with AVX-512 BF16 oneDNN's bf16 convolutions run R- and O-Net markedly faster
    (timings in docs/performance.md), logits within ~0.05 of float32. The input arrives float32,
    the flattened features go back to float32, so the fused heads and everything after them stay
    float32. On a CPU without native bf16, oneDNN emulates it and it is slower: opt in.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.net = net
        layers = pool_before_monotone_prelu([m for m in net.body if not isinstance(m, nn.Dropout)])  # Dropout: eval-mode identity
        self._body = layers
        flat = next((i for i, m in enumerate(layers) if isinstance(m, nn.Flatten)), len(layers))
        # Plain lists: the layers stay registered once, under ``net``.
        self._blocked, self._dense = layers[:flat], layers[flat:]
        heads = [net.cls, net.box, net.landmark]
        self._map_heads = isinstance(net.cls, nn.Conv2d)
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"OneDnnNet runs float32 or bfloat16, not {dtype}")
        if dtype == torch.bfloat16 and self._map_heads:
            raise ValueError("bfloat16 is for the crop nets (Linear heads); a map-head net such as P-Net runs float32")
        self.dtype = dtype
        if dtype == torch.bfloat16:
            self._blocked = [_bfloat16_copy(m) for m in self._blocked]
        self._sizes = [int(h.weight.shape[0]) for h in heads]
        self._weight = torch.cat([h.weight.detach().flatten(1) for h in heads])
        self._bias = torch.cat([h.bias.detach() for h in heads])

    def _run_blocked(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to_mkldnn(self.dtype)
        for m in self._blocked:
            # The strided-view pool needs a strided tensor; oneDNN's own pool is fast anyway.
            x = F.max_pool2d(x, 2, 2, ceil_mode=True) if isinstance(m, MaxPool2x2) else m(x)
        x = x.to_dense().float()
        for m in self._dense:
            x = m(x)
        return x

    def forward(self, x: torch.Tensor, with_landmarks: bool = True):
        if x.shape[0] == 0 or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.net(x, with_landmarks=with_landmarks)
        sizes = self._sizes if with_landmarks else self._sizes[:2]
        weight, bias = self._weight[: sum(sizes)], self._bias[: sum(sizes)]
        if self._map_heads:
            # [N, h, w, C] view of channels-last features -> [N, h, w, heads] -> NCHW-shaped view.
            for m in self._body:
                x = m(x)
            features = x.permute(0, 2, 3, 1)
            out = F.linear(features, weight, bias).permute(0, 3, 1, 2)
        else:
            out = F.linear(self._run_blocked(x), weight, bias)
        parts = out.split(sizes, dim=1)
        return parts[0], parts[1], (parts[2] if with_landmarks else None)


class CheckedNet(nn.Module):
    """A reduced-precision crop net whose threshold decisions are those of its float32 twin.

    Called like any three-head net, it runs ``fast`` (e.g. the bfloat16 :class:`OneDnnNet`).
    :func:`mtcnn.stages._score_crops` knows the stage threshold and re-runs ``exact`` on the
    windows whose fast face probability lies within ``margin`` of it, so a window passes or fails
    as in float32, provided the fast probabilities stay within ``margin`` of float32's. Measured
    for bfloat16 on 80 face_mask validation photos and the dlib photos, original and shipped
    weights: at most 0.031 apart over 20k R-Net windows, 0.016 over 6k O-Net windows; the default
    margin of 0.08 leaves 2.5× headroom. The other windows keep the fast scores and box offsets
    (close to float32's, not equal), so use it for the last stage: in R-Net those offsets move
    O-Net's crops, and 2 of 729 face_mask validation faces were lost; re-running every window
    that may pass in float32 instead costs more than bf16 saves on face-dense photos.
    """

    def __init__(self, fast: nn.Module, exact: nn.Module, margin: float = 0.08):
        super().__init__()
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"margin={margin}: a probability margin in [0, 0.5)")
        self.fast, self.exact, self.margin = fast, exact, float(margin)
        # Crops per float32 pass for a given fast chunk: the same bytes of feature maps (cache-sized chunks).
        fast_dtype = getattr(fast, "dtype", torch.float32)
        self.exact_chunk_scale = torch.finfo(fast_dtype).bits / 32

    def forward(self, x: torch.Tensor, with_landmarks: bool = True):
        return self.fast(x, with_landmarks=with_landmarks)


def pool_before_monotone_prelu(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with every (PReLU, max-pool) pair whose slopes are all ≥ 0 in the order (max-pool, PReLU).

    Such a PReLU is non-decreasing, so the maximum of activations is the activation of the
    maximum: the same values, bit for bit (ceil-mode edge windows included), with the PReLU on
    the pooled map (a quarter of the values for 2×2 / stride 2, ~a fifth for 3×3 / stride 2), which
    shortens every detector run (docs/performance.md has the timings). A negative slope makes the
    PReLU fall below 0, so such layers keep their order."""
    out = list(layers)
    for i in range(len(out) - 1):
        pool = isinstance(out[i + 1], (nn.MaxPool2d, MaxPool2x2)) and not getattr(out[i + 1], "return_indices", False)
        if isinstance(out[i], nn.PReLU) and pool and bool((out[i].weight >= 0).all()):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _bfloat16_copy(layer: nn.Module) -> nn.Module:
    """``layer`` for a bfloat16 oneDNN tensor: convolutions as oneDNN bf16 convolutions, PReLU
    with bf16 slopes (oneDNN's PReLU does not promote), parameter-free layers as they are."""
    if isinstance(layer, nn.Conv2d):
        from torch.utils import mkldnn as mkldnn_utils

        return mkldnn_utils.to_mkldnn(copy.deepcopy(layer), torch.bfloat16)
    if isinstance(layer, nn.PReLU):
        converted = copy.deepcopy(layer)
        converted.weight.data = converted.weight.data.to(torch.bfloat16)
        return converted
    if any(True for _ in layer.parameters()):
        raise ValueError(f"no bfloat16 oneDNN form for {type(layer).__name__}")
    return layer


def _is_pointwise_conv(m) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
            and m.padding in ((0, 0), "valid") and m.bias is not None)  # fmt: skip


def one_dnn_net(net: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``net`` wrapped in :class:`OneDnnNet` where that applies (oneDNN available, a three-head
    net whose body is a Sequential and whose heads are all Linear or all 1×1 convolutions);
    otherwise ``net`` itself (float32 only: a ``dtype`` it cannot honour is an error)."""
    if not torch.backends.mkldnn.is_available():
        if dtype != torch.float32:
            raise ValueError("bfloat16 inference needs PyTorch built with oneDNN (torch.backends.mkldnn)")
        return net
    heads = [getattr(net, k, None) for k in ("cls", "box", "landmark")]
    fusable = all(type(h) is nn.Linear and h.bias is not None for h in heads) or all(_is_pointwise_conv(h) for h in heads)
    if not (fusable and isinstance(getattr(net, "body", None), nn.Sequential)):
        if dtype != torch.float32:
            raise ValueError(f"bfloat16 inference needs a three-head net with a Sequential body; {type(net).__name__} runs float32 only")
        return net
    return OneDnnNet(net, dtype)
