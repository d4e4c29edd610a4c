"""Path placeholders in configs, expanded in one place, and the default configs shipped inside
the package (read through ``importlib.resources``, so they work from an installed wheel).

Placeholders: ``{data}`` :func:`data_root` (``$MTCNN_DATA`` or ``../shared/data``), ``{gen}``
:func:`gen_root` (``$MTCNN_GEN`` or ``../gen`` beside the project: generated data never goes
into the project tree), ``{runs}`` :func:`runs_root` (``$MTCNN_RUNS`` or ``{gen}/runs``: where training writes its
checkpoints and the miner looks for them, whatever the working directory), ``{webfaces}``
:func:`webfaces_root` (``$MTCNN_WEBFACES`` or ``../webfaces`` beside the project: Caltech WebFaces,
which is not in the shared data), ``{wider}`` :func:`wider_root` (``$MTCNN_WIDER`` or ``../wider``:
WIDER FACE training photos), ``{w300}`` :func:`w300_root` (``$MTCNN_300W`` or ``../300w``: the 300-W
training sets), ``{split}`` (``train`` / ``val``, when given) and ``~``.

:func:`portable_path` goes the other way: files that leave the machine (checkpoints' stored
configs, bundles, weight cards) record a path as its placeholder form, so the record means the
same on the machine of whoever reproduces the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

from mtcnn.config.core import ConfigError

# mtcnn/config/paths.py -> the checkout's parent folder (where shared/ and gen/ live).
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3]


def data_root() -> Path:
    """Where the real annotated data lives: $MTCNN_DATA, else ../shared/data beside the project."""
    env = os.environ.get("MTCNN_DATA")
    if env:
        return Path(env)
    beside_checkout = _BESIDE_CHECKOUT / "shared" / "data"
    beside_cwd = Path.cwd().parent / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() or not beside_cwd.is_dir() else beside_cwd


def gen_root() -> Path:
    """Where generated data goes by default: ``$MTCNN_GEN``, else ``../gen`` beside the project."""
    env = os.environ.get("MTCNN_GEN")
    if env:
        return Path(env)
    return _BESIDE_CHECKOUT / "gen"


def webfaces_root() -> Path:
    """Caltech WebFaces (``WebFaces_GroundThruth.txt``, ``Caltech_WebFaces/``): ``$MTCNN_WEBFACES``,
    else ``../webfaces`` beside the project."""
    env = os.environ.get("MTCNN_WEBFACES")
    if env:
        return Path(env)
    return _BESIDE_CHECKOUT / "webfaces"


def wider_root() -> Path:
    """WIDER FACE training photos (``train/<file>.jpg``, flat, as the Crowd-Counting snapshot holds
    them; see docs/training.md): ``$MTCNN_WIDER``, else ``../wider`` beside the project. Not in the
    shared data, which holds WIDER's annotations only."""
    env = os.environ.get("MTCNN_WIDER")
    if env:
        return Path(env)
    return _BESIDE_CHECKOUT / "wider"


def w300_root() -> Path:
    """The 300-W training sets (``lfpw/trainset``, ``helen/trainset``, ``afw/afw``: images with iBUG
    68-point ``.pts`` files; the test sets are never read): ``$MTCNN_300W``, else ``../300w`` beside the
    project. Not in the shared data."""
    env = os.environ.get("MTCNN_300W")
    if env:
        return Path(env)
    return _BESIDE_CHECKOUT / "300w"


def runs_root() -> Path:
    """Where training runs go by default: ``$MTCNN_RUNS``, else ``runs`` under :func:`gen_root`."""
    env = os.environ.get("MTCNN_RUNS")
    return Path(env) if env else gen_root() / "runs"


def data_hint(path: str | os.PathLike) -> str:
    """For a missing path under the data folder: where that folder comes from and how to move it."""
    root = data_root()
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return ""
    origin = "MTCNN_DATA" if os.environ.get("MTCNN_DATA") else "the default ../shared/data (MTCNN_DATA is not set)"
    return f" (the data folder {root} is {origin}; set MTCNN_DATA to where the data is)"


def resolve_path(text: str | os.PathLike, split: str | None = None) -> Path:
    """Expand ``{data}``, ``{gen}``, ``{runs}``, ``{webfaces}``, ``{split}`` and ``~`` in a config path."""
    s = str(text)
    # {runs} first: its default is itself under {gen}.
    s = s.replace("{runs}", str(runs_root()))
    s = s.replace("{data}", str(data_root())).replace("{gen}", str(gen_root()))
    s = s.replace("{webfaces}", str(webfaces_root()))
    s = s.replace("{wider}", str(wider_root()))
    s = s.replace("{w300}", str(w300_root()))
    if split is not None:
        s = s.replace("{split}", split)
    return Path(os.path.expanduser(s))


# The placeholders a stored path may start with. Among the roots that hold a path the deepest
# wins, so a run under the default {runs} (= {gen}/runs) is written {runs}/...; equal roots go
# in this order.
PLACEHOLDERS = ("runs", "data", "gen", "webfaces", "wider", "w300")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")

RootsArg = Mapping[str, "str | os.PathLike | Sequence[str | os.PathLike]"]


def is_absolute_path(text: str | os.PathLike) -> bool:
    """Whether ``text`` is an absolute path on this or another system (``/...``, ``C:\\...``, ``\\\\host``)."""
    s = str(text)
    return s.startswith("/") or bool(_WINDOWS_ABSOLUTE.match(s))


def placeholder_roots() -> dict[str, Path]:
    """This machine's folder for each placeholder (environment overrides included)."""
    return {"runs": runs_root(), "data": data_root(), "gen": gen_root(), "webfaces": webfaces_root(),
            "wider": wider_root(), "w300": w300_root()}


def _relative_to(path: PurePath, root: PurePath) -> PurePath | None:
    try:
        return path.relative_to(root)
    except ValueError:
        return None


def _candidates(roots: RootsArg) -> list[tuple[str, Path]]:
    unknown = sorted(set(roots) - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"portable_path: unknown placeholder(s) {', '.join(unknown)}; known: {', '.join(PLACEHOLDERS)}")
    out = []
    for name in PLACEHOLDERS:
        given = roots.get(name)
        if given is None:
            continue
        for root in [given] if isinstance(given, (str, os.PathLike)) else given:
            out.append((name, Path(os.path.normpath(root))))
    return out


def portable_path(path: str | os.PathLike, roots: RootsArg | None = None, strict: bool = False) -> str:
    """``path`` as a config or card stores it: an absolute path under the folder of a placeholder
    (:data:`PLACEHOLDERS`: ``{runs}``, ``{data}``, ``{gen}``, ...) becomes that placeholder and the rest
    (``/x/gen/runs/onet`` -> ``{runs}/onet``); :func:`resolve_path` turns it back into the path on
    whichever machine reads it. Relative paths and placeholder forms are returned as given.

    ``roots``: placeholder -> folder (or several folders) to use instead of this machine's, e.g. to
    rewrite files written on another machine. An absolute path under none of them cannot mean
    the same elsewhere: it is returned as given (a record keeps what it knows), or with
    ``strict`` refused with a :class:`ConfigError` naming it.
    """
    text = os.fspath(path)
    if not is_absolute_path(text):
        return text
    candidates = _candidates(placeholder_roots() if roots is None else roots)
    norm = Path(os.path.normpath(text))
    best: tuple[int, str, PurePath] | None = None
    for pass_resolved in (False, True):  # literal paths first; then through symlinks
        target = norm.resolve() if pass_resolved else norm
        for name, root in candidates:
            rest = _relative_to(target, root.resolve() if pass_resolved else root)
            if rest is not None and (best is None or len(root.parts) > best[0]):
                best = (len(root.parts), name, rest)
        if best is not None:
            break
    if best is not None:
        _, name, rest = best
        return "{" + name + "}" + ("" if not rest.parts else "/" + rest.as_posix())
    if strict:
        where = ", ".join(f"{{{name}}} = {root}" for name, root in candidates)
        raise ConfigError(f"{text}: under none of the placeholders' folders ({where}); it would not mean the same on another machine")
    return text


def portable_config(obj: Any, roots: RootsArg | None = None, strict: bool = False) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) with every absolute path in it written by
    :func:`portable_path`: what checkpoints, bundles and weight cards store."""
    if isinstance(obj, Mapping):
        return {k: portable_config(v, roots, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [portable_config(v, roots, strict) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, PurePath) or (isinstance(obj, str) and is_absolute_path(obj)):
        return portable_path(obj, roots, strict)
    return obj


def absolute_paths(obj: Any, where: str = "") -> list[str]:
    """``"<where>: <path>"`` for every absolute path among the strings (and dict keys) of ``obj``."""
    found = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, str) and is_absolute_path(k):
                found.append(f"{where}: key {k}")
            found += absolute_paths(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += absolute_paths(v, f"{where}[{i}]")
    elif isinstance(obj, (str, PurePath)) and is_absolute_path(obj):
        found.append(f"{where}: {obj}")
    return found


def default_config_names() -> list[str]:
    return sorted(p.name for p in resources.files("mtcnn.config.defaults").iterdir() if p.name.endswith(".yaml"))


def default_config(name: str) -> Path:
    """The shipped default config ``name`` (e.g. ``train_pnet.yaml``) as a file path."""
    entry = resources.files("mtcnn.config.defaults") / name
    if not entry.is_file():
        raise ConfigError(f"no default config {name!r}; shipped: {', '.join(default_config_names())}")
    # The package is installed as files (not a zip), so the resource is a real path.
    return Path(str(entry))


__all__ = [
    "PLACEHOLDERS", "absolute_paths", "data_hint", "data_root", "default_config", "default_config_names", "gen_root",
    "is_absolute_path", "placeholder_roots", "portable_config", "portable_path", "resolve_path", "runs_root", "w300_root",
    "webfaces_root", "wider_root",
]
