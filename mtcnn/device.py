"""Turning a device setting (``cpu``, ``cuda``, ``cuda:N``, ``auto``) into a usable torch device,
or one clear line saying why it is not usable here."""

from __future__ import annotations

import functools
import os

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


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX-512 BF16 or AMX-BF16 (x86 Linux, read
    from /proc/cpuinfo; False where that cannot be read). Elsewhere oneDNN emulates bf16, slower
    than float32. ``MTCNN_NATIVE_BF16=0`` (or ``1``) in the environment overrides the check (the
    test suite sets 0: its results then do not depend on the CPU running it)."""
    forced = os.environ.get("MTCNN_NATIVE_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bfloat16()


@functools.cache
def _cpu_has_bfloat16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


__all__ = ["DeviceError", "native_bfloat16", "resolve_device"]
