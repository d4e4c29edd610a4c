"""Small helpers of :mod:`mtcnn.data.h5`: HDF5 attribute values, lock messages, run-wise row reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from mtcnn.config import to_dict


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _locked(err: OSError) -> bool:
    return "lock" in str(err).lower()


def _locked_message(path: Path) -> str:
    return (f"{path} is locked by another process (is another generator writing it?); "
            "stop that process or wait for it to finish")


def _attr_value(value: Any) -> Any:
    """Normalise a value to something HDF5 attributes hold (YAML string for structures)."""
    if hasattr(value, "__dataclass_fields__"):
        value = to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value
    ):
        return np.asarray(value)
    return yaml.safe_dump(to_dict(value), sort_keys=True)


def _attr_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _py(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Read sorted unique ``rows`` of ``ds``, one HDF5 read per contiguous run."""
    out = np.empty((rows.size,) + ds.shape[1:], ds.dtype)
    if rows.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [rows.size]))
    if starts.size == rows.size:
        for j, r in enumerate(rows.tolist()):
            out[j] = ds[r]
        return out
    for s, e in zip(starts.tolist(), ends.tolist()):
        r = int(rows[s])
        out[s:e] = ds[r:r + (e - s)]
    return out
