"""The Sun, Wang & Tang (CVPR 2013) landmark cascade: 23 small nets on grey crops (SPEC §7, §11).

Level 1 looks at the whole face: F1 (39×39, all five points), EN1 (39 wide × 31 high: eyes and
nose) and NM1 (39×31: nose and mouth corners). Levels 2 and 3 each hold two patch nets per point
(LE21, LE22, RE21, …, RM32) that see a 15×15 square around the previous estimate and say where
the point lies inside it. Every net outputs coordinates normalised to its own crop (0..1 on each
axis, interleaved x, y); :mod:`mtcnn.stages` maps them back to the image.

Two variants share every shape: ``"relu"`` (plain convolutions, the reimplementations' choice and
our default) and ``"abs_tanh"``, the paper's |g·tanh| unit with *locally shared* weights in the
level-1 convolutions (:class:`LocallySharedConv2d`). Output layers are linear in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.nets.registry import NetSpec, register_net

POINTS = ("LE", "RE", "N", "LM", "RM")
VARIANTS = ("relu", "abs_tanh")
PATCH_SIZE = 15
#: :func:`standardise`'s floor on a crop's deviation: one grey level of the registry's input map
STANDARDISE_EPS = 1.0 / 128
#: (left, right, top, bottom) of each level-1 crop relative to the face box (SPEC §7)
LEVEL1_REGIONS = {
    "F1": (-0.05, 1.05, -0.05, 1.05),
    "EN1": (-0.05, 1.05, -0.04, 0.84),
    "NM1": (-0.05, 1.05, 0.18, 1.05),
}
#: half-side of each patch net's square, as a fraction of the face box's width / height
PATCH_HALF_SIZES = {"21": 0.16, "22": 0.18, "31": 0.12, "32": 0.11}
#: training shift of the patch centre (uniform, ± this fraction of the box) per level
PATCH_SHIFTS = {2: 0.05, 3: 0.02}
# The paper's p×q regions of locally shared weights for the four level-1 convolutions.
LEVEL1_SHARING = ((2, 2), (2, 2), (3, 3), (1, 1))


@dataclass(frozen=True)
class CascadeNetSpec:
    """What a cascade net sees and predicts.

    level: 1, 2 or 3; input_hw: (height, width) of its grey crop; points: indices into
    :data:`POINTS` it predicts, in output order; region: level-1 crop box relative to the face box
    (left, right, top, bottom); half_size: patch half-side relative to the box (levels 2/3).
    """

    name: str
    level: int
    input_hw: tuple[int, int]
    points: tuple[int, ...]
    region: tuple[float, float, float, float] | None = None
    half_size: float | None = None

    @property
    def num_outputs(self) -> int:
        return 2 * len(self.points)

    @property
    def registry_name(self) -> str:
        """The name under which the net is registered (``sun_f1``, ``sun_le21``, ...)."""
        return "sun_" + self.name.lower()


def _specs() -> dict[str, CascadeNetSpec]:
    specs = {
        "F1": CascadeNetSpec("F1", 1, (39, 39), (0, 1, 2, 3, 4), LEVEL1_REGIONS["F1"]),
        "EN1": CascadeNetSpec("EN1", 1, (31, 39), (0, 1, 2), LEVEL1_REGIONS["EN1"]),
        "NM1": CascadeNetSpec("NM1", 1, (31, 39), (2, 3, 4), LEVEL1_REGIONS["NM1"]),
    }
    for suffix, half in PATCH_HALF_SIZES.items():
        for k, point in enumerate(POINTS):
            name = f"{point}{suffix}"
            specs[name] = CascadeNetSpec(name, int(suffix[0]), (PATCH_SIZE, PATCH_SIZE), (k,), half_size=half)
    return specs


CASCADE_NETS: dict[str, CascadeNetSpec] = _specs()


def nets_of_level(level: int, points: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Names of the level's nets (all, or only those predicting ``points`` for levels 2/3)."""
    names = [n for n, s in CASCADE_NETS.items() if s.level == level]
    if points is None or level == 1:
        return names
    unknown = sorted(set(points) - set(POINTS))
    if unknown:
        raise ValueError(f"unknown point(s) {', '.join(unknown)}: choose from {', '.join(POINTS)}")
    return [n for n in names if POINTS[CASCADE_NETS[n].points[0]] in points]


class AbsTanh(nn.Module):
    """|g·tanh(x)|: the paper's absolute-value rectified hyperbolic tangent with a fixed gain."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(self.gain * torch.tanh(x))

    def extra_repr(self) -> str:
        return f"gain={self.gain}"


def region_index(size: int, parts: int) -> torch.Tensor:
    """Which of ``parts`` equal bands each of ``size`` output rows (or columns) falls in."""
    return torch.div(torch.arange(size) * parts, size, rounding_mode="floor")


class LocallySharedConv2d(nn.Module):
    """A valid, stride-1 convolution whose weights are shared only within regions of its output.

    The output map of an input of ``input_hw`` is split into ``regions[0]`` bands of rows by
    ``regions[1]`` bands of columns (as equal as integer sizes allow); each band pair has its own
    kernel and bias. ``regions=(1, 1)`` is an ordinary convolution. Computed as one im2col
    (``unfold``) and one matrix product per region, never a loop over positions or samples.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_hw: tuple[int, int], regions: tuple[int, int]) -> None:
        super().__init__()
        out_h, out_w = input_hw[0] - kernel_size + 1, input_hw[1] - kernel_size + 1
        if not (1 <= regions[0] <= out_h and 1 <= regions[1] <= out_w):
            raise ValueError(f"{regions} regions do not fit a {out_h}×{out_w} output map")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.input_hw, self.regions = tuple(input_hw), tuple(regions)
        count = regions[0] * regions[1]
        self.weight = nn.Parameter(torch.empty(count, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(count, out_channels))
        for r in range(count):
            nn.init.kaiming_uniform_(self.weight.data[r], a=5**0.5)
        label = region_index(out_h, regions[0])[:, None] * regions[1] + region_index(out_w, regions[1])[None, :]
        label = label.reshape(-1)
        order = torch.argsort(label, stable=True)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse", torch.argsort(order), persistent=False)
        self.counts = torch.bincount(label, minlength=count).tolist()
        self.out_hw = (out_h, out_w)

    def region_of(self) -> torch.Tensor:
        """Region label ``[out_h, out_w]`` of every output position (row-major over regions)."""
        oh, ow = self.out_hw
        return region_index(oh, self.regions[0])[:, None] * self.regions[1] + region_index(ow, self.regions[1])[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(f"locally shared conv built for {self.input_hw} inputs, got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        cols = F.unfold(x, self.kernel_size)[:, :, self.order]  # [N, C·k·k, L] grouped by region
        weight = self.weight.reshape(self.weight.shape[0], self.out_channels, -1)
        parts = [
            torch.matmul(weight[r], chunk) + self.bias[r][:, None]
            for r, chunk in enumerate(torch.split(cols, self.counts, dim=2))
        ]
        out = torch.cat(parts, dim=2)[:, :, self.inverse]
        return out.reshape(n, self.out_channels, *self.out_hw)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, input_hw={self.input_hw}, regions={self.regions}"


def _activation(variant: str) -> nn.Module:
    return nn.ReLU() if variant == "relu" else AbsTanh()


class LevelOneNet(nn.Module):
    """conv4 20 → pool → conv3 40 → pool → conv3 60 → pool → conv2 80 → FC hidden → FC outputs."""

    def __init__(self, spec: CascadeNetSpec, variant: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        h, w = spec.input_hw
        layers: list[nn.Module] = []
        channels = (1, 20, 40, 60, 80)
        kernels = (4, 3, 3, 2)
        for i, k in enumerate(kernels):
            if variant == "abs_tanh":
                layers.append(LocallySharedConv2d(channels[i], channels[i + 1], k, (h, w), LEVEL1_SHARING[i]))
            else:
                layers.append(nn.Conv2d(channels[i], channels[i + 1], k))
            layers.append(_activation(variant))
            h, w = h - k + 1, w - k + 1
            if i < 3:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        hidden = 120 if spec.name == "F1" else 100
        self.body = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(80 * h * w, hidden), _activation(variant), nn.Dropout(dropout)
        )
        self.head = nn.Linear(hidden, spec.num_outputs)

    def forward(self, x: torch.Tensor, eps: float = STANDARDISE_EPS) -> torch.Tensor:
        return self.head(self.body(standardise(x, eps)))


class PatchNet(nn.Module):
    """15×15 patch → conv4 20 → pool → conv3 40 → pool → FC 60 → FC 2 (levels 2 and 3)."""

    def __init__(self, spec: CascadeNetSpec, variant: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        act = lambda: _activation(variant)  # noqa: E731
        self.body = nn.Sequential(
            nn.Conv2d(1, 20, 4), act(), nn.MaxPool2d(2),
            nn.Conv2d(20, 40, 3), act(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(160, 60), act(), nn.Dropout(dropout),
        )  # fmt: skip
        self.head = nn.Linear(60, spec.num_outputs)

    def forward(self, x: torch.Tensor, eps: float = STANDARDISE_EPS) -> torch.Tensor:
        return self.head(self.body(standardise(x, eps)))


class FusedPatchNets(nn.Module):
    """Several trained :class:`PatchNet` s run as one: grouped convolutions, batched FC layers.

    Input ``[N, G, 15, 15]`` (patch g for net g), output ``[N, G, 2]``; equal to running each net
    on its own patch (tested), but one pass instead of G keeps a CPU's cores busy on small batches.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        g = len(nets)
        convs = [[m for m in net.body if isinstance(m, nn.Conv2d)] for net in nets]
        fcs = [[m for m in net.body if isinstance(m, nn.Linear)][0] for net in nets]
        self.groups = g
        self.act = [m for m in nets[0].body if not isinstance(m, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.Flatten, nn.Dropout))][0]
        self.conv1 = nn.Conv2d(g, 20 * g, 4, groups=g)
        self.conv2 = nn.Conv2d(20 * g, 40 * g, 3, groups=g)
        with torch.no_grad():
            for layer, k in ((self.conv1, 0), (self.conv2, 1)):
                layer.weight.copy_(torch.cat([c[k].weight for c in convs]))
                layer.bias.copy_(torch.cat([c[k].bias for c in convs]))
        self.fc_weight = nn.Parameter(torch.stack([f.weight.detach() for f in fcs]))  # [G, 60, 160]
        self.fc_bias = nn.Parameter(torch.stack([f.bias.detach() for f in fcs]))
        self.head_weight = nn.Parameter(torch.stack([n.head.weight.detach() for n in nets]))  # [G, 2, 60]
        self.head_bias = nn.Parameter(torch.stack([n.head.bias.detach() for n in nets]))

    def forward(self, x: torch.Tensor, eps: float = STANDARDISE_EPS) -> torch.Tensor:
        n, g = x.shape[:2]
        x = standardise(x.reshape(n * g, 1, *x.shape[2:]), eps).reshape(x.shape)
        x = conv_act_pool(self.conv1, self.act, x)
        x = conv_act_pool(self.conv2, self.act, x)
        x = x.reshape(n, g, -1).transpose(0, 1)  # [G, N, 160], each group's (C, H, W) flattened
        x = self.act(torch.baddbmm(self.fc_bias[:, None], x, self.fc_weight.transpose(1, 2)))
        x = torch.baddbmm(self.head_bias[:, None], x, self.head_weight.transpose(1, 2))
        return x.transpose(0, 1)


class PhaseConvPool(nn.Module):
    """``F.max_pool2d(conv(x), 2)`` of a one-channel ``k × k`` convolution, as one wider convolution.

    oneDNN runs single-channel convolutions several times below its speed for wider inputs. Here
    the input is cut into 2×2 blocks (space-to-depth: 4 channels at half the size) and one
    ``(k//2 + 1)²`` convolution computes the conv output at all four pixels of each pooling window
    (4·O channels, phase-major); the pool is then the maximum of the four phases' channel slices.
    ~2× the multiply-adds (zero taps), ~3× faster, the same sums of products up to float rounding.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        o, _, k, _ = conv.weight.shape
        self.out_channels, self.kernel = o, k
        kb = k // 2 + 1
        weight = torch.zeros(2, 2, o, 2, 2, kb, kb)  # [phase y, phase x, O, block row, block col, by, bx]
        w = conv.weight.detach()[:, 0]
        for py in range(2):
            for px in range(2):
                for dy in range(k):
                    for dx in range(k):
                        ry, rx = py + dy, px + dx
                        weight[py, px, :, ry % 2, rx % 2, ry // 2, rx // 2] = w[:, dy, dx]
        self.weight = nn.Parameter(weight.reshape(4 * o, 4, kb, kb))
        self.bias = nn.Parameter(conv.bias.detach().repeat(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kb = self.kernel // 2 + 1
        hb, wb = (h - self.kernel + 1) // 2 + kb - 1, (w - self.kernel + 1) // 2 + kb - 1
        # Padded or cut rows/columns only meet zero taps or feed conv outputs the pool drops.
        x = F.pad(x, (0, 2 * wb - w, 0, 2 * hb - h))
        x = x.reshape(n, hb, 2, wb, 2).permute(0, 2, 4, 1, 3).reshape(n, 4, hb, wb)  # channel: 2·row + column in block
        x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, self.weight, self.bias)
        o = self.out_channels
        # Two maxima over halves of the channels (phases 0,1 against 2,3, then the pair): a third
        # less time than three maxima over quarters, the channel runs being twice as long.
        pairs = torch.maximum(y[:, : 2 * o], y[:, 2 * o :])
        return torch.maximum(pairs[:, :o], pairs[:, o:])


class LevelOneInference(nn.Module):
    """A trained ``"relu"`` :class:`LevelOneNet` in a faster inference form with the same outputs (tested).

    The first convolution and its pool run as one :class:`PhaseConvPool`; each ReLU runs after
    its max-pool (:func:`conv_act_pool`).
    """

    def __init__(self, net: LevelOneNet) -> None:
        super().__init__()
        convs = [m for m in net.body if isinstance(m, (nn.Conv2d, LocallySharedConv2d))]
        if not all(type(c) is nn.Conv2d for c in convs) or not isinstance(net.body[1], nn.ReLU):
            raise ValueError("LevelOneInference needs a \"relu\" LevelOneNet (abs_tanh nets run as they are)")
        self.conv1 = PhaseConvPool(convs[0])
        self.convs = nn.ModuleList(convs[1:])
        self.fc = [m for m in net.body if isinstance(m, nn.Linear)][0]
        self.head = net.head
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, eps: float = STANDARDISE_EPS) -> torch.Tensor:
        x = self.conv1(standardise(x, eps)).relu_()
        for i, conv in enumerate(self.convs):
            x = conv_act_pool(conv, self.act, x) if i < len(self.convs) - 1 else conv(x).relu_()
        return self.head(self.fc(x.flatten(1)).relu_())


def build_cascade_net(name: str, variant: str = "relu", dropout: float = 0.0) -> nn.Module:
    """One cascade net by name (``F1``, ``EN1``, ``NM1``, ``LE21`` … ``RM32``)."""
    if name not in CASCADE_NETS:
        raise ValueError(f"unknown cascade net '{name}': choose one of {', '.join(CASCADE_NETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown cascade variant '{variant}': choose one of {', '.join(VARIANTS)}")
    spec = CASCADE_NETS[name]
    net = LevelOneNet(spec, variant, dropout) if spec.level == 1 else PatchNet(spec, variant, dropout)
    net.spec = spec
    net.variant = variant
    return net


def standardise(crops: torch.Tensor, eps: float = STANDARDISE_EPS) -> torch.Tensor:
    """Per-crop zero mean, unit deviation ([L]'s normalisation): lighting and contrast drop out.

    Every cascade net applies it to its input first, so the registry's fixed input map
    ``(pixel - 127.5) / 128`` (or any other affine one) gives the same result; ``eps`` (one grey
    level after that map) keeps a flat crop from being blown up into noise.
    """
    # Two vectorised passes (mean, then the centred dot product) run ~9× faster on a CPU than
    # std_mean's one-pass Welford reduction over short rows, and are as accurate.
    flat = crops.reshape(crops.shape[0], -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    std = (torch.linalg.vecdot(centred, centred) / flat.shape[1]).sqrt_()
    return (centred * (std + eps).reciprocal_()[:, None]).reshape(crops.shape)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (floor mode) as three maxima of strided views: ATen's CPU max-pool
    also computes argmax indices and runs ~2× slower on these small maps. Bit-identical."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def conv_act_pool(conv: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``max_pool(act(conv(x)), 2)``. A ReLU commutes with the max-pool (both monotone), so it
    runs after the pool, in place, on a quarter of the values; other activations (|g·tanh| is
    not monotone) keep their place."""
    if isinstance(act, nn.ReLU):
        return max_pool_2x2(conv(x)).relu_()
    return max_pool_2x2(act(conv(x)))


def _register() -> None:
    for spec in CASCADE_NETS.values():
        register_net(
            NetSpec(
                spec.registry_name,
                lambda variant="relu", dropout=0.0, _name=spec.name: build_cascade_net(_name, variant, dropout),
                spec.input_hw,
                channels="grey",
                heads=("landmark",),
                num_landmarks=len(spec.points),
                description=f"Sun et al. level-{spec.level} landmark net {spec.name} (SPEC §7)",
            )
        )


_register()
