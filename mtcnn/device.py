"""Turning a device setting (``cpu``, ``cuda``, ``cuda:N``, ``auto``) into a usable torch device,
or one clear line saying why it is not usable here."""

from __future__ import annotations

import torch

from mtcnn.errors import DeviceError


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else the CPU. Anything else must exist here."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {str(spec)!r} is not a device name (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {str(spec)!r} asked for, but {why}; use --device cpu (device=cpu in a config)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {str(spec)!r} asked for, but this machine has {count} CUDA GPU"
                              f"{'s' if count != 1 else ''} (cuda:0{f'..cuda:{count - 1}' if count > 1 else ''})")
    elif device.type != "cpu":
        raise DeviceError(f"device {str(spec)!r} is not supported (use cpu, cuda or cuda:N)")
    return device


__all__ = ["DeviceError", "resolve_device"]
