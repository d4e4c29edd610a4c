"""Fine-tuning: a run that starts from trained weights (``init``) and may keep some layers fixed
for its first steps (``freeze``). Every training config has both (:class:`mtcnn.config.train.RunConfig`).

``init`` names the weights the net starts from instead of a random initialisation:

* ``default``: the shipped weights of that net (``mtcnn/weights``: ``pnet.pt``, ``rnet.pt``,
  ``onet.pt``, and the landmark models ``kp68_compact.pt``, ``mobilenet_cascade.pt``,
  ``cascade_sun.pt``);
* ``original``: the converted weights of Zhang et al. (P-, R-, O-Net only;
  ``third_party/mtcnn_original.pt`` or ``$MTCNN_ORIGINAL_WEIGHTS``, see the README);
* a path (placeholders such as ``{runs}`` allowed): a checkpoint of the net, a bundle holding it
  (detector, landmark or cascade bundle), a training state ``last.pt``, or a folder with
  ``<net>.pt`` (or ``*/<net>.pt``, a cascade run folder; or ``last.pt``).

The file must hold the net being trained with the registered spec (input size, channels,
normalisation, heads, points) and the same tensor shapes; anything else is refused with one
line naming the file. Loading happens when the run starts (a resumed run continues from its
``last.pt`` instead); the optimiser, the LR schedule and resume are those of a normal run. The
final checkpoint's ``meta["init"]`` records what the run started from: the ``init`` setting, the
file (in its placeholder form) and a hash of the values loaded.

``freeze`` keeps the named layers fixed for the first ``steps`` optimiser steps (null: the whole
run): ``layers`` lists parameter-name prefixes of the net (``body.0``, ``cls``, ``features``)
or ``trunk`` (every layer but the heads). Frozen parameters get no gradient during those steps
(so neither the optimiser nor weight decay moves them, and their optimiser state starts when
they thaw); the forward pass and the batches are exactly those of an unfrozen run.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtcnn.config.core import ConfigError
from mtcnn.nets import MTCNN_NETS, get_net_spec
from mtcnn.nets.registry import NetSpec
from mtcnn.weights import FORMAT, FORMAT_VERSION, WeightsError, _load_file, load_state_checked, validate_checkpoint

INIT_NAMES = ("default", "original")
TRUNK = "trunk"
# Top-level modules that are heads: the registry's head names, and "head" (landmark-zoo and cascade nets).
_HEAD_MODULES = frozenset({"cls", "box", "landmark", "head", "heads"})
_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class InitWeights:
    """Weights a run starts from: the state dict, where it came from (``record``, for the
    checkpoint's meta) and the top level of its file (``container``: a bundle's ``variant``...)."""

    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any]
    container: dict[str, Any] = field(default_factory=dict)


def _shipped_files() -> list[Path]:
    from mtcnn.cascade import DEFAULT_CASCADE
    from mtcnn.landmark_models import LANDMARK_MODELS
    from mtcnn.weights import DEFAULT_WEIGHTS

    return [DEFAULT_WEIGHTS / f"{n}.pt" for n in MTCNN_NETS] + list(LANDMARK_MODELS.values()) + [DEFAULT_CASCADE]


def _held_nets(raw: Any) -> dict[str, tuple[str, dict]]:
    """net name -> (key in the file, checkpoint) of every net a loaded file holds."""
    from mtcnn.training.loop import STATE_FORMAT

    if not isinstance(raw, dict):
        return {}
    if raw.get("format") == FORMAT and isinstance(raw.get("net"), str):
        return {raw["net"]: ("", raw)}
    if raw.get("format") == STATE_FORMAT and isinstance(raw.get("model"), dict):
        try:
            spec = get_net_spec(raw.get("net"))
        except ValueError:
            return {}
        # A training state records the net's name (its config, not its spec): the spec is the registered one.
        ckpt = {"format": FORMAT, "version": FORMAT_VERSION, "net": spec.name, "state_dict": raw["model"],
                "preprocessing": spec.preprocessing()}
        return {spec.name: ("", ckpt)}
    nets = raw.get("nets")
    if not isinstance(nets, dict):
        return {}
    out = {}
    for key, ckpt in nets.items():
        if isinstance(ckpt, dict) and isinstance(ckpt.get("net"), str):
            out[ckpt["net"]] = (str(key), ckpt)
    return out


def _source_label(path: Path) -> str:
    """A file's name as a record keeps it: package files relative to the package, others in their
    placeholder form (:func:`mtcnn.config.paths.portable_path`)."""
    from mtcnn.config.paths import portable_path

    try:
        return "mtcnn/" + path.resolve().relative_to(_PACKAGE).as_posix()
    except ValueError:
        pass
    portable = portable_path(path.absolute())
    if portable.startswith("{"):  # {runs}/..., {gen}/..., {data}/...
        return portable
    try:
        return path.resolve().relative_to(_PACKAGE.parent).as_posix()  # in the checkout (third_party/...)
    except ValueError:
        return portable


def _in_folder(folder: Path, net: str) -> Path:
    for candidate in (folder / f"{net}.pt", *sorted(folder.glob(f"*/{net}.pt")), folder / "last.pt"):
        if candidate.is_file():
            return candidate
    raise WeightsError(f"{folder}: no {net}.pt (nor */{net}.pt, last.pt) in this folder")


def _hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def resolve_init(init: str, net: str | NetSpec) -> InitWeights:
    """Load the weights ``init`` names for ``net`` (see the module docstring); one-line
    :class:`WeightsError` when they are missing or do not fit the registered net."""
    spec = get_net_spec(net)
    name = spec.name
    text = str(init).strip()
    if text == "default":
        files = _shipped_files()
        held: dict[str, Path] = {}
        for f in files:
            if f.is_file() and name not in held:
                for n in _held_nets(_load_file(f)):
                    held.setdefault(n, f)
        if name not in held:
            cascade = [n for n in held if n.startswith("sun_")]
            shipped = [n for n in held if n not in cascade] + ([f"the {len(cascade)} cascade nets sun_*"] if cascade else [])
            raise WeightsError(f"init=default: no shipped weights for net '{name}' (shipped: {', '.join(shipped) or 'none'})")
        path = held[name]
    elif text == "original":
        if name not in MTCNN_NETS:
            raise WeightsError(f"init=original: the original MTCNN weights hold {', '.join(MTCNN_NETS)}, not '{name}'")
        from mtcnn.weights import original_weights

        try:
            path = original_weights()
        except WeightsError as e:
            raise WeightsError(f"init=original: {str(e).split(': ', 1)[-1]}") from None
    else:
        from mtcnn.config.paths import resolve_path

        path = resolve_path(text)
        if path.is_dir():
            path = _in_folder(path, name)
    raw = _load_file(path)
    nets = _held_nets(raw)
    if not nets:
        raise WeightsError(f"{path}: not an mtcnn checkpoint, bundle or training state (init={text})")
    if name not in nets:
        if len(nets) == 1:
            (other,) = nets
            raise WeightsError(f"{path}: holds a '{other}' but a '{name}' was expected (init={text})")
        raise WeightsError(f"{path}: holds no '{name}' (it holds {', '.join(nets)}; init={text})")
    key, ckpt = nets[name]
    where = f"{path}[{key}]" if key else str(path)
    validate_checkpoint(ckpt, name, where)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    label = _source_label(path) + (f"[{key}]" if key else "")
    record = {"init": text, "source": label, "net": name, "sha256": _hash(state)}
    container = {k: v for k, v in raw.items() if k not in ("nets", "state_dict", "model", "optimizer")} if isinstance(raw, dict) else {}
    return InitWeights(state, record, container)


def apply_init(model: nn.Module, weights: InitWeights) -> None:
    """Copy ``weights`` into ``model`` after checking the keys and every tensor's shape."""
    load_state_checked(model, weights.state_dict, weights.record["net"], weights.record["source"])


def layer_names(model: nn.Module) -> list[str]:
    """The names ``freeze.layers`` accepts: every module that owns parameters, and ``trunk``."""
    names: list[str] = []
    for param_name, _ in model.named_parameters():
        parts = param_name.split(".")[:-1]
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix not in names:
                names.append(prefix)
    return [TRUNK, *names]


def frozen_parameters(model: nn.Module, layers: list[str] | tuple[str, ...], net: str) -> list[nn.Parameter]:
    """The parameters of ``layers`` (parameter-name prefixes, or ``trunk``: all but the heads)."""
    params = dict(model.named_parameters())
    chosen: dict[str, nn.Parameter] = {}
    known = layer_names(model)
    for layer in layers:
        if layer == TRUNK:
            hits = {n: p for n, p in params.items() if n.split(".")[0] not in _HEAD_MODULES}
            if len(hits) == len(params):
                raise ConfigError(f"freeze.layers: {net} has no head module ({', '.join(sorted(_HEAD_MODULES))}) to tell its trunk from")
        else:
            hits = {n: p for n, p in params.items() if n == layer or n.startswith(layer + ".")}
        if not hits:
            close = difflib.get_close_matches(layer, known, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"freeze.layers: '{layer}' is not a layer of {net} ({hint}layers: {', '.join(known)})")
        chosen.update(hits)
    return list(chosen.values())


__all__ = ["INIT_NAMES", "InitWeights", "apply_init", "frozen_parameters", "layer_names", "resolve_init"]
