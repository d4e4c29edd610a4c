"""Path placeholders in configs, expanded in one place, and the default configs shipped inside
the package (read through ``importlib.resources``, so they work from an installed wheel).

Placeholders: ``{data}`` :func:`data_root` (``$MTCNN_DATA`` or ``../shared/data``), ``{gen}``
:func:`gen_root` (``$MTCNN_GEN`` or ``../gen`` beside the project: generated data never goes
into the project tree), ``{split}`` (``train`` / ``val``, when given) and ``~``.
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


def resolve_path(text: str | os.PathLike, split: str | None = None) -> Path:
    """Expand ``{data}``, ``{gen}``, ``{split}`` and ``~`` in a config path."""
    s = str(text)
    s = s.replace("{data}", str(data_root())).replace("{gen}", str(gen_root()))
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


__all__ = ["data_root", "default_config", "default_config_names", "gen_root", "resolve_path"]
