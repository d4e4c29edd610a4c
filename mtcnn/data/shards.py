"""Sample generation, hard-example mining and scene synthesis split over processes by ``torchrun``.

``torchrun --nnodes N --nproc_per_node M <generator command>`` (the launcher that runs training's
DistributedDataParallel) starts ``N * M`` copies of a command with ``RANK`` and ``WORLD_SIZE``
set; each copy is one :class:`Shard` (:meth:`Shard.from_env`). There is no scheduler here: the
split is fixed by position, and torchrun starts, watches and stops the processes.

* Work is split by position in the job's deterministic order: rank ``r`` of ``w`` takes the
  blocks ``b`` with ``b % w == r``, block ``b`` holding positions ``[b * block, (b + 1) * block)``
  (:meth:`Shard.owns`). The per-image generators use ``block = 1``; the miner uses
  ``batch_images``, so every stage call sees exactly the images it sees in one process. Every
  image's randomness is seeded from ``(seed, item id)``, never from the split, so the samples of
  any number of ranks are those of one process (as a multiset: the order differs).
* Each rank writes its own crash-safe shard beside the usual output: ``pnet_train.h5`` ->
  ``pnet_train.rank00-of02.h5`` ... (:meth:`Shard.path`), through the usual journal
  (``pnet_train.rank00-of02.partial`` while it runs). A rerun resumes each unfinished shard and
  skips the finished ones (checking that they were made with the same settings), so a killed
  rank's shard is all that is redone.
* When every shard is complete, ``pnet_train.shards.json`` (:func:`manifest_path`) lists them, in
  rank order, with their sample counts. Under torchrun the ranks meet at one gloo barrier at the
  end and rank 0 writes it; ranks started some other way (``RANK`` / ``WORLD_SIZE`` set by hand,
  tests) each try after their own shard, and the last to finish writes it.
* Readers take the usual path: :func:`sample_files` gives the file itself when it exists, else
  the manifest's shards, which :func:`mtcnn.data.readers.open_sample_file` reads as one dataset
  (each kind's rows concatenated in rank order).

The output folder must be storage every rank sees (one machine, or a shared file system when
several nodes run): shards, journals and the manifest all live there.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py

from mtcnn.atomic import atomic_write_text
from mtcnn.data.h5 import KINDS, SampleReader, _json_attr
from mtcnn.data.h5_util import _attr_value, _one_line, _py
from mtcnn.data.journal import describe_difference
from mtcnn.errors import DataError, OutputExistsError

__all__ = [
    "MANIFEST_FORMAT",
    "Shard",
    "ShardError",
    "barrier",
    "check_shard_settings",
    "finish",
    "manifest_path",
    "refuse_complete_output",
    "sample_files",
    "set_line",
    "write_manifest",
]

MANIFEST_FORMAT = "mtcnn-sample-shards"
MANIFEST_VERSION = 1
# Ranks that finish early wait at the closing barrier for the slowest one (after a kill, the
# others skip their finished shards at once and wait for the resumed one): hours, not minutes.
BARRIER_TIMEOUT = datetime.timedelta(days=7)
# How long rank 0 waits, after the barrier, for every shard to be visible to it (a shared file
# system may show another node's new file a little later).
VISIBLE_WAIT_S = 120.0

T = TypeVar("T")


class ShardError(DataError, RuntimeError):
    """A sharded job cannot go on (a finished shard of other settings, a set that never completes)."""


@dataclass(frozen=True)
class Shard:
    """This process's share of a job: rank ``rank`` of ``world_size`` (1: the whole job)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (a rendezvous exists): the ranks meet at a barrier

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")

    @classmethod
    def from_env(cls) -> Shard:
        """The torchrun layout (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one whole job without it."""
        from mtcnn.training.distributed import dist_env

        info = dist_env()
        launched = info.enabled and bool(os.environ.get("MASTER_ADDR")) and bool(os.environ.get("MASTER_PORT"))
        return cls(info.rank, info.world_size, info.local_rank, launched)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def owns(self, position: int, block: int = 1) -> bool:
        """Whether ``position`` of the job's order is this rank's (block ``position // block``)."""
        return (int(position) // max(int(block), 1)) % self.world_size == self.rank

    def select(self, items: Sequence[T], key: Callable[[T], int], block: int = 1) -> list[T]:
        """This rank's items, in job order (``key``: an item's position)."""
        return [it for it in items if self.owns(key(it), block)]

    def path(self, final: str | os.PathLike) -> Path:
        """This rank's file beside ``final``: ``x/pnet_train.h5`` -> ``x/pnet_train.rank00-of02.h5``."""
        final = Path(final)
        return final.with_name(f"{final.stem}.rank{self.rank:02d}-of{self.world_size:02d}{final.suffix}")

    def paths(self, final: str | os.PathLike) -> list[Path]:
        """Every rank's file beside ``final``, in rank order."""
        return [Shard(r, self.world_size).path(final) for r in range(self.world_size)]

    def attrs(self) -> dict[str, int]:
        """File attributes that mark a shard: its rank and the number of ranks."""
        return {"shard_rank": self.rank, "shard_world_size": self.world_size}

    def device(self, name: str) -> str:
        """A bare ``cuda`` is this rank's GPU (``cuda:LOCAL_RANK``) when the job is split."""
        return f"cuda:{self.local_rank}" if self.enabled and name == "cuda" else name


def manifest_path(final: str | os.PathLike) -> Path:
    """``x/pnet_train.h5`` -> ``x/pnet_train.shards.json``."""
    final = Path(final)
    return final.with_name(f"{final.stem}.shards.json")


def _shard_glob(final: Path) -> list[Path]:
    """Shard files and journals of ``final`` of any world size (``x.rank00-of02.h5``, ``x.rank01-of02.partial``)."""
    pattern = re.compile(re.escape(final.stem) + r"\.rank\d+-of\d+(" + re.escape(final.suffix) + r"|\.partial)$")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.match(p.name))


def sample_files(path: str | os.PathLike) -> list[Path]:
    """The files that hold the samples of ``path``: ``[path]`` when it exists, else the shards its
    manifest lists (rank order). Raises ``FileNotFoundError`` (one line) when shards exist but the
    set is not complete; with nothing there at all returns ``[path]`` (its reader says it is missing)."""
    path = Path(path)
    if path.is_file():
        return [path]
    man = manifest_path(path)
    if man.is_file():
        try:
            data = json.loads(man.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a {MANIFEST_FORMAT} file")
            files = [man.parent / s["file"] for s in data["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FileNotFoundError(f"sample file {path} not found, and its shard list {man} is unreadable "
                                    f"({_one_line(e)})") from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"sample file {path} not found, and {man.name} lists shard(s) that are gone: "
                                    f"{', '.join(missing)}")
        return files
    found = _shard_glob(path)
    if found:
        done = sum(p.suffix == path.suffix for p in found)
        names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise FileNotFoundError(f"sample file {path} not found: a sharded run left {names} ({done} complete) but not "
                                "every rank has finished; rerun the same torchrun command to resume")
    return [path]


def write_manifest(final: str | os.PathLike, world_size: int,
                   on_complete: Callable[[list[Path]], None] | None = None) -> Path | None:
    """Write ``final``'s shard manifest when all ``world_size`` shards are complete (None otherwise).

    Idempotent: the content depends on the shard files only. ``on_complete(shards)`` runs first
    (e.g. the miner's combined recall report)."""
    final = Path(final)
    shards = Shard(0, world_size).paths(final)
    if not all(p.is_file() for p in shards):
        return None
    first = _settings(shards[0])
    for p in shards[1:]:
        other = _settings(p)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise ShardError(f"{p.name} was made with other settings than {shards[0].name} "
                                 f"({describe_difference(key, other.get(key), first.get(key))}); "
                                 "rerun that rank with the settings of the others, or every rank with --overwrite")
    counts = [SampleReader(p).counts() for p in shards]
    if on_complete is not None:
        on_complete(shards)
    total = {k: sum(c[k] for c in counts) for k in KINDS}
    record = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "file": final.name, "world_size": world_size,
        "shards": [{"rank": r, "file": p.name, "counts": c} for r, (p, c) in enumerate(zip(shards, counts))],
        "counts": total,
    }  # fmt: skip
    man = manifest_path(final)
    atomic_write_text(man, json.dumps(record, indent=1) + "\n")
    return man


def _settings(path: Path) -> dict[str, Any]:
    """A shard's attributes that must agree across the set (all but its rank and progress)."""
    return {k: v for k, v in _stored_attrs(path).items() if k not in ("shard_rank", "progress", "complete")}


def _stored_attrs(path: Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return {k: _json_attr(_py(v)) for k, v in f.attrs.items()}
    except OSError as e:
        raise ShardError(f"{path}: not a readable HDF5 file ({_one_line(e)}); delete it and rerun") from None


def refuse_complete_output(final: str | os.PathLike, overwrite: bool, shard: Shard) -> None:
    """A complete output (the single file or a complete shard set) stops a new run unless
    ``overwrite``; with it, the shard manifest and this rank's finished shard go (the single file
    stays until the new one replaces it, as before)."""
    final = Path(final)
    man = manifest_path(final)
    if not overwrite:
        if final.exists():
            raise OutputExistsError(f"{final} already exists (complete); delete it or pass --overwrite to regenerate")
        if man.exists():
            raise OutputExistsError(f"{final.name} already exists as a complete set of shards ({man}); "
                                    "delete it and its shards or pass --overwrite to regenerate")
        return
    man.unlink(missing_ok=True)
    if shard.enabled:
        shard.path(final).unlink(missing_ok=True)


def check_shard_settings(path: str | os.PathLike, attrs: Mapping[str, Any]) -> None:
    """A finished shard is only reused when it was made with ``attrs`` (seed, config, ...)."""
    path = Path(path)
    stored = _stored_attrs(path)
    for key, value in attrs.items():
        now = _json_attr(_attr_value(value))
        if stored.get(key) != now:
            raise ShardError(f"{path} is a finished shard made with other settings "
                             f"({describe_difference(key, stored.get(key), now)}); rerun with the original settings, "
                             "or pass --overwrite (or delete it) to start over")


def barrier(shard: Shard) -> None:
    """Every rank of a torchrun job waits here for the others (gloo over torchrun's rendezvous)."""
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size, timeout=BARRIER_TIMEOUT)
        created = True
    try:
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()


def finish(shard: Shard, complete: Callable[[], T | None], what: str) -> T | None:
    """After this rank's share is done: ``complete()`` assembles the whole output when every rank
    has finished (it returns None while some have not).

    Under torchrun the ranks meet at a barrier and rank 0 alone calls ``complete()`` (waiting up to
    :data:`VISIBLE_WAIT_S` for the other ranks' files to show); the others return None. Ranks
    started some other way each call it, and the last one to finish completes the set."""
    if not shard.launched:
        try:
            return complete()
        except ShardError as e:  # another rank may still be replacing its shard
            print(f"warning: {e}; the set is not complete yet", file=sys.stderr, flush=True)
            return None
    barrier(shard)
    if shard.rank != 0:
        return None
    deadline = time.monotonic() + VISIBLE_WAIT_S
    while True:
        result = complete()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise ShardError(f"every rank finished but {what} are not all visible to rank 0 after {VISIBLE_WAIT_S:.0f} s: "
                             "is the output folder on storage that every node shares?")
        time.sleep(2.0)


def set_line(shard: Shard, final: str | os.PathLike, manifest: Path | None) -> str:
    """One line for a rank's summary: whether the shard set is complete and where it is listed."""
    final = Path(final)
    if manifest is None:
        who = "rank 0 writes it" if shard.launched else "the last rank to finish writes it"
        return f"{shard}: shard done; {manifest_path(final).name} lists the set once every rank has finished ({who})"
    counts = json.loads(manifest.read_text())["counts"]
    text = "  ".join(f"{k} {counts.get(k, 0):,}" for k in KINDS)
    return (f"{shard}: all {shard.world_size} shards complete, listed in {manifest}: {text} "
            f"(total {sum(counts.values()):,}); training reads them as {final.name}")

