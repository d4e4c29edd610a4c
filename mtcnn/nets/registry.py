"""The one place where a net's facts live: input size, channels, normalisation, heads, landmarks.

Every consumer (the detector's stages, the training loop and its tasks, the sample generators,
checkpoints and export) asks :func:`get_net_spec` instead of keeping its own table, so adding a
net is one module that defines the ``nn.Module`` plus one :func:`register_net` call.

Head widths follow from the head names: ``cls`` 2 logits, ``box`` 4 offsets, ``landmark``
``2 * num_landmarks`` coordinates interleaved x, y; the rotation-calibrating nets' orientation
heads (:mod:`mtcnn.nets.pcn`): ``flip`` 2 logits (up / down), ``turn`` 3 logits (-90° / 0° / +90°),
``angle`` 1 value (the angle in units of 45°). A net with several heads returns them as a
tuple in the order of :attr:`NetSpec.heads`; a net with one head returns that tensor alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from mtcnn.errors import UsageError

HEAD_NAMES = ("cls", "box", "landmark", "flip", "turn", "angle")
# The heads of the MTCNN nets (and the default of a spec).
MTCNN_HEADS = ("cls", "box", "landmark")
CHANNEL_ORDER = {"rgb": "RGB", "grey": "GREY"}


class UnknownNetError(UsageError, ValueError):
    """A net name that nobody registered; the message lists the known names."""


@dataclass(frozen=True)
class NetSpec:
    """Facts about one model. ``factory(**kwargs)`` builds a fresh, randomly initialised net.

    ``input_size`` is (height, width) of one training crop (a fully convolutional net such as
    P-Net also takes larger images: its cell and stride are the crop size and
    :attr:`stride`). Inputs are ``(pixel - mean) * scale`` on ``channels`` ("rgb": 3 planes
    in RGB order; "grey": 1 plane).
    """

    name: str
    factory: Callable[..., nn.Module] = field(compare=False, repr=False)
    input_size: tuple[int, int]
    channels: Literal["rgb", "grey"] = "rgb"
    mean: float = 127.5
    scale: float = 0.0078125
    heads: tuple[str, ...] = MTCNN_HEADS
    num_landmarks: int = 5
    fully_convolutional: bool = False
    stride: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_ORDER:
            raise ValueError(f"net {self.name!r}: channels={self.channels!r} must be 'rgb' or 'grey'")
        unknown = [h for h in self.heads if h not in HEAD_NAMES]
        if unknown or not self.heads:
            raise ValueError(f"net {self.name!r}: heads {list(self.heads)} must be a non-empty subset of {HEAD_NAMES}")
        if "landmark" in self.heads and self.num_landmarks < 1:
            raise ValueError(f"net {self.name!r}: a landmark head needs num_landmarks >= 1")
        h, w = self.input_size
        if h < 1 or w < 1 or self.scale <= 0:
            raise ValueError(f"net {self.name!r}: input_size {self.input_size} and scale {self.scale} must be positive")
        object.__setattr__(self, "input_size", (int(h), int(w)))
        object.__setattr__(self, "heads", tuple(self.heads))

    @property
    def in_channels(self) -> int:
        return 3 if self.channels == "rgb" else 1

    @property
    def crop_size(self) -> int:
        """The side of a square input crop (the MTCNN stages crop squares)."""
        h, w = self.input_size
        if h != w:
            raise ValueError(f"net {self.name!r} takes {h}x{w} inputs, not squares")
        return h

    def head_width(self, head: str) -> int:
        return {"cls": 2, "box": 4, "landmark": 2 * self.num_landmarks, "flip": 2, "turn": 3, "angle": 1}[head]

    def preprocessing(self) -> dict[str, Any]:
        """The checkpoint's ``preprocessing`` record (the same keys every checkpoint has had)."""
        return {"mean": self.mean, "scale": self.scale, "channel_order": CHANNEL_ORDER[self.channels]}

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint records about the net (plain types, ``weights_only``-loadable)."""
        return {
            "name": self.name,
            "input_size": list(self.input_size),
            "channels": self.channels,
            "mean": self.mean,
            "scale": self.scale,
            "heads": list(self.heads),
            "num_landmarks": self.num_landmarks,
        }

    def mismatch(self, recorded: Mapping[str, Any]) -> str | None:
        """The first difference between this spec and a checkpoint's record, or None."""
        mine = self.to_dict()
        for key, value in mine.items():
            if key in recorded and _plain(recorded[key]) != value:
                return f"{key}={_plain(recorded[key])!r} differs from the registered {value!r}"
        return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_REGISTRY: dict[str, NetSpec] = {}


def register_net(spec: NetSpec, *, replace: bool = False) -> NetSpec:
    """Add ``spec`` under ``spec.name``; registering a name twice is an error unless ``replace``."""
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise ValueError(f"net {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def net_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_net_spec(name: str | NetSpec) -> NetSpec:
    if isinstance(name, NetSpec):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownNetError(f"unknown net '{name}'{hint}: choose one of {', '.join(_REGISTRY)}") from None


def build_net(name: str | NetSpec, **kwargs: Any) -> nn.Module:
    """A fresh net of the registered kind; ``kwargs`` go to its factory (e.g. ONet's dropout)."""
    spec = get_net_spec(name)
    return spec.factory(**kwargs)


__all__ = ["HEAD_NAMES", "NetSpec", "UnknownNetError", "build_net", "get_net_spec", "net_names", "register_net"]
