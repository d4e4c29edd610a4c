"""Checkpoints: one file holds a net's state dict, its name, its input preprocessing and config.

A *bundle* holds the three detector nets (``{"nets": {"pnet": ckpt, "rnet": ckpt, "onet": ckpt}}``);
the detector loads a bundle file or a folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt``. Loading
checks the format, the net name, the preprocessing and the tensor shapes, and refuses a mismatch
with a one-line message naming the file.

:func:`import_facenet_pytorch` converts the original MTCNN weights (Zhang et al.) as shipped in
the ``facenet-pytorch`` wheel into this format.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtcnn.atomic import atomic_torch_save
from mtcnn.config.paths import portable_config
from mtcnn.errors import InputError
from mtcnn.nets import MTCNN_NETS, build_net, get_net_spec

FORMAT = "mtcnn-checkpoint"
FORMAT_VERSION = 1
NET_NAMES = MTCNN_NETS
# The shipped default: this project's own P-, R- and O-Net, one checkpoint each (with a JSON card
# each) in the package's weights folder, which load_bundle reads as a folder of per-net files.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
# Beside per-net checkpoints: the detector settings those weights were calibrated for.
DETECTOR_SETTINGS_FILE = "detector.json"
# ``--weights original``: the converted weights of Zhang et al.'s release, which cannot be shipped here
# (they come from another package's wheel): $MTCNN_ORIGINAL_WEIGHTS, else this file under the
# working folder or the project checkout.
ORIGINAL_WEIGHTS = Path("third_party") / "mtcnn_original.pt"
WEIGHTS_HINT = (
    "get weights with: pip download facenet-pytorch==2.6.0 --no-deps -d third_party && "
    "python tools/convert_weights.py third_party/facenet_pytorch-2.6.0-py3-none-any.whl "
    "--out third_party/mtcnn_original.pt, then pass --weights original (or the file's path, "
    "or set MTCNN_WEIGHTS)"
)


class WeightsError(InputError, ValueError):
    """A checkpoint is missing, unreadable or does not fit; ``str(e)`` is one line."""


def make_checkpoint(net_name: str, model: nn.Module, config: dict | None = None, meta: dict | None = None) -> dict:
    """A checkpoint of ``model`` recording its registered spec (loading refuses a mismatch).

    Paths in ``config`` and ``meta`` are stored in their placeholder form
    (:func:`mtcnn.config.paths.portable_path`), so the file reads the same on another machine."""
    spec = get_net_spec(net_name)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "net": net_name,
        "state_dict": {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()},
        "preprocessing": spec.preprocessing(),
        "spec": spec.to_dict(),
        "config": portable_config(config or {}),
        "meta": portable_config(meta or {}),
    }


def _load_file(path: Path) -> Any:
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found; {WEIGHTS_HINT}")
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder without {', '.join(f'{n}.pt' for n in NET_NAMES)}")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (0x80 protocol byte).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsError(f"{path}: not a PyTorch checkpoint (expected a .pt file written by torch.save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files; its messages run to paragraphs
        raise WeightsError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_sentence(str(e))})") from None


def _first_sentence(text: str, limit: int = 160) -> str:
    """The start of a long library message, cut at a sentence or word boundary, never mid-word."""
    text = " ".join(text.split())
    for end in (". ", "; "):
        if end in text[:limit]:
            return text[: text.index(end, 0, limit) + 1]
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def validate_checkpoint(ckpt: Any, expected_net: str, source: str) -> dict:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsError(
            f"{source}: not an mtcnn checkpoint (a raw state dict? convert original weights with tools/convert_weights.py)"
        )
    if ckpt.get("version") != FORMAT_VERSION:
        raise WeightsError(f"{source}: checkpoint version {ckpt.get('version')} is not supported (expected {FORMAT_VERSION})")
    if ckpt.get("net") != expected_net:
        raise WeightsError(f"{source}: holds a '{ckpt.get('net')}' but a '{expected_net}' was expected")
    try:
        spec = get_net_spec(expected_net)
    except ValueError as e:
        raise WeightsError(f"{source}: {e}") from None
    pre = ckpt.get("preprocessing", {})
    for key, value in spec.preprocessing().items():
        if pre.get(key) != value:
            raise WeightsError(f"{source}: preprocessing {key}={pre.get(key)!r} differs from the registered {expected_net}'s {value!r}")
    # Checkpoints written before the registry have no "spec"; their preprocessing was checked above.
    problem = spec.mismatch(ckpt["spec"]) if isinstance(ckpt.get("spec"), dict) else None
    if problem:
        raise WeightsError(f"{source}: {expected_net} spec {problem}")
    return ckpt


def load_net(ckpt: dict, net_name: str, source: str, **build_kwargs) -> nn.Module:
    """Build ``net_name`` (``build_kwargs`` to its factory, e.g. a variant that changes its
    layers) and load a validated checkpoint into it, with shape checks."""
    validate_checkpoint(ckpt, net_name, source)
    model = build_net(net_name, **build_kwargs)
    load_state_checked(model, ckpt["state_dict"], net_name, source)
    return model.eval()


def load_state_checked(model: nn.Module, state: dict, net_name: str, source: str) -> None:
    """Load ``state`` into ``model`` after checking its keys and every tensor's shape (one
    :class:`WeightsError` line naming ``source`` otherwise); tensors take the model's dtypes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"{source}: {net_name} keys do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{source}: {net_name}.{key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}")
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_bundle(path: str | os.PathLike) -> tuple[dict[str, nn.Module], dict]:
    """Load the three detector nets from a bundle file or a folder of per-net checkpoints.

    Returns ``(nets, info)`` where info holds the file path, a short content hash and per-net meta.
    """
    path = Path(path)
    if path.is_dir():
        ckpts = {name: _load_file(path / f"{name}.pt") for name in NET_NAMES}
        sources = {name: str(path / f"{name}.pt") for name in NET_NAMES}
        detector_settings = _read_detector_settings(path / DETECTOR_SETTINGS_FILE)
    else:
        raw = _load_file(path)
        if not isinstance(raw, dict) or "nets" not in raw:
            if isinstance(raw, dict) and raw.get("format") == FORMAT:
                raise WeightsError(f"{path}: holds a single '{raw.get('net')}'; the detector needs a bundle or a folder with pnet.pt, rnet.pt, onet.pt")
            raise WeightsError(f"{path}: not an mtcnn weights bundle (convert original weights with tools/convert_weights.py)")
        ckpts = raw["nets"]
        sources = {name: f"{path}[{name}]" for name in NET_NAMES}
        detector_settings = raw.get("detector", {})
        if not isinstance(detector_settings, dict):
            raise WeightsError(f"{path}: its 'detector' settings are not a mapping")
        for name in NET_NAMES:
            if name not in ckpts:
                raise WeightsError(f"{path}: bundle has no '{name}'")
    nets = {name: load_net(ckpts[name], name, sources[name]) for name in NET_NAMES}
    detector_settings = _checked_detector_settings(detector_settings, path / DETECTOR_SETTINGS_FILE if path.is_dir() else path)
    info = {
        "path": str(path),
        "sha256": weights_hash(nets),
        "meta": {name: ckpts[name].get("meta", {}) for name in NET_NAMES},
        "detector": detector_settings,
    }
    return nets, info


def _checked_detector_settings(settings: dict, source: Path) -> dict:
    """``settings`` as DetectorConfig values (JSON lists as tuples), after checking them."""
    from mtcnn.config import DetectorConfig, from_dict
    from mtcnn.config.core import ConfigError

    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    try:
        from_dict(DetectorConfig, settings)
    except ConfigError as e:
        raise WeightsError(f"{source}: detector settings: {e}") from None
    return settings


def _read_detector_settings(path: Path) -> dict:
    """The operating point a folder of weights was calibrated for (``detector.json``: detector
    settings such as ``thresholds``); empty when the folder has none."""
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not readable detector settings ({e})") from None
    if not isinstance(settings, dict):
        raise WeightsError(f"{path}: detector settings must be a JSON object")
    return settings


def load_stage_net(path: str | os.PathLike, net_name: str) -> nn.Module:
    """One net from a per-net checkpoint, a bundle, or a folder with ``<net_name>.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{net_name}.pt"
    raw = _load_file(path)
    if isinstance(raw, dict) and "nets" in raw:
        if net_name not in raw["nets"]:
            raise WeightsError(f"{path}: bundle has no '{net_name}'")
        return load_net(raw["nets"][net_name], net_name, f"{path}[{net_name}]")
    return load_net(raw, net_name, str(path))


def weights_hash(nets: dict[str, nn.Module]) -> str:
    """Short hash of the weights' values (not the file bytes), for reports."""
    h = hashlib.sha256()
    for name in NET_NAMES:
        for key, tensor in sorted(nets[name].state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_bundle(nets: dict[str, nn.Module], path: str | os.PathLike, config: dict | None = None, meta: dict | None = None,
                detector: dict | None = None) -> None:
    """``detector``: settings the weights were calibrated for (e.g. ``thresholds``), which the
    detector uses unless a preset or the caller says otherwise."""
    bundle = {
        "format": FORMAT + "-bundle",
        "version": FORMAT_VERSION,
        "nets": {name: make_checkpoint(name, nets[name], config, (meta or {}).get(name, {})) for name in NET_NAMES},
    }
    if detector:
        bundle["detector"] = dict(detector)
    atomic_torch_save(bundle, path)


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weights to use: the argument, else $MTCNN_WEIGHTS, else the shipped default.

    ``"default"`` names the shipped weights and ``"original"`` the converted original MTCNN weights.
    """
    if weights is None:
        weights = os.environ.get("MTCNN_WEIGHTS") or "default"
    if str(weights) == "original":
        return original_weights()
    if str(weights) != "default":
        return Path(weights)
    if all((DEFAULT_WEIGHTS / f"{name}.pt").is_file() for name in NET_NAMES):
        return DEFAULT_WEIGHTS
    raise WeightsError(f"no weights given and the default weights are not installed in {DEFAULT_WEIGHTS}; {WEIGHTS_HINT}")


def original_weights() -> Path:
    """Where the converted original MTCNN weights are (``--weights original``)."""
    env = os.environ.get("MTCNN_ORIGINAL_WEIGHTS")
    if env:
        return Path(env)
    project = Path(__file__).resolve().parents[1]
    for candidate in (Path.cwd() / ORIGINAL_WEIGHTS, project / ORIGINAL_WEIGHTS):
        if candidate.is_file():
            return candidate
    raise WeightsError(f"--weights original: no {ORIGINAL_WEIGHTS} here or in {project} and MTCNN_ORIGINAL_WEIGHTS is not set; {WEIGHTS_HINT}")


# --- import of the original MTCNN weights (facenet-pytorch 2.6.0 layout) ------------------

# facenet-pytorch key -> our key. Its R/O-Net FC layers read features flattened after
# permute(0, 3, 2, 1), i.e. in (W, H, C) order; ours flatten (C, H, W).
_FACENET_KEYS = {
    "pnet": {
        "conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
        "conv3": "body.5", "prelu3": "body.6", "conv4_1": "cls", "conv4_2": "box",
    },
    "rnet": {
        "conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
        "conv3": "body.6", "prelu3": "body.7", "dense4": "body.9", "prelu4": "body.10",
        "dense5_1": "cls", "dense5_2": "box",
    },
    "onet": {
        "conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
        "conv3": "body.6", "prelu3": "body.7", "conv4": "body.9", "prelu4": "body.10",
        "dense5": "body.12", "prelu5": "body.14", "dense6_1": "cls", "dense6_2": "box",
        "dense6_3": "landmark",
    },
}  # fmt: skip
# (feature map C, H, W) entering the first FC layer.
_FC_INPUT = {"rnet": ("dense4", (64, 3, 3)), "onet": ("dense5", (128, 3, 3))}


def convert_facenet_state_dict(net_name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map one facenet-pytorch state dict onto our layout (exact, no retraining)."""
    mapping = _FACENET_KEYS[net_name]
    model = build_net(net_name)
    out = {k: v.clone() for k, v in model.state_dict().items()}
    seen = set()
    for key, tensor in state.items():
        layer, _, param = key.rpartition(".")
        if layer not in mapping:
            raise WeightsError(f"{net_name}: unexpected original key '{key}'")
        tensor = tensor.detach().float().clone()
        if net_name in _FC_INPUT and layer == _FC_INPUT[net_name][0] and param == "weight":
            c, h, w = _FC_INPUT[net_name][1]
            tensor = tensor.reshape(-1, w, h, c).permute(0, 3, 2, 1).reshape(tensor.shape[0], -1)
        if net_name == "onet" and layer == "dense6_3":
            # Original landmark head emits [x1..x5, y1..y5]; ours is interleaved x, y.
            order = torch.tensor([0, 5, 1, 6, 2, 7, 3, 8, 4, 9])
            tensor = tensor[order]
        target = f"{mapping[layer]}.{param}"
        if tuple(out[target].shape) != tuple(tensor.shape):
            raise WeightsError(f"{net_name}: original '{key}' has shape {tuple(tensor.shape)}, expected {tuple(out[target].shape)}")
        out[target] = tensor
        seen.add(target)
    missing = [k for k in out if k not in seen and not k.startswith("landmark.")]
    if missing:
        raise WeightsError(f"{net_name}: original weights lack {missing}")
    if net_name in ("pnet", "rnet"):
        # The original P/R-Net have no landmark head; ours stays zero (unused at test time).
        out["landmark.weight"].zero_()
        out["landmark.bias"].zero_()
    return out


def import_facenet_pytorch(source: str | os.PathLike) -> dict[str, nn.Module]:
    """Read ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` from the wheel (or an unpacked folder)."""
    source = Path(source)
    if not source.exists():
        raise WeightsError(f"{source}: not found; download it with: pip download facenet-pytorch==2.6.0 --no-deps -d third_party")
    blobs: dict[str, bytes] = {}
    if source.is_dir():
        for name in NET_NAMES:
            candidates = [source / "facenet_pytorch" / "data" / f"{name}.pt", source / "data" / f"{name}.pt", source / f"{name}.pt"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise WeightsError(f"{source}: no {name}.pt inside (expected facenet_pytorch/data/{name}.pt)")
            blobs[name] = found.read_bytes()
    else:
        try:
            with zipfile.ZipFile(source) as z:
                for name in NET_NAMES:
                    blobs[name] = z.read(f"facenet_pytorch/data/{name}.pt")
        except (zipfile.BadZipFile, KeyError) as e:
            raise WeightsError(f"{source}: not a facenet-pytorch wheel with facenet_pytorch/data/*.pt ({e})") from None
    nets = {}
    for name in NET_NAMES:
        state = torch.load(io.BytesIO(blobs[name]), map_location="cpu", weights_only=True)
        model = build_net(name)
        model.load_state_dict(convert_facenet_state_dict(name, state))
        nets[name] = model.eval()
    return nets
