"""Path placeholders in configs, expanded in one place, and the default configs shipped inside
the package (read through ``importlib.resources``, so they work from an installed wheel).

Placeholders: ``{data}`` :func:`data_root` (``$MTCNN_DATA`` or ``../shared/data``), ``{gen}``
:func:`gen_root` (``$MTCNN_GEN`` or ``../gen`` beside the project: generated data never goes
into the project tree), ``{runs}`` :func:`runs_root` (``$MTCNN_RUNS`` or ``{gen}/runs``: where training writes its
checkpoints and the miner looks for them, whatever the working directory), ``{webfaces}``
:func:`webfaces_root` (``$MTCNN_WEBFACES`` or ``../webfaces`` beside the project: Caltech WebFaces,
which is not in the shared data), ``{split}`` (``train`` / ``val``, when given) and ``~``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

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
    if split is not None:
        s = s.replace("{split}", split)
    return Path(os.path.expanduser(s))


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
    "data_hint", "data_root", "default_config", "default_config_names", "gen_root", "resolve_path", "runs_root", "webfaces_root",
]
