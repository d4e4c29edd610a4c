"""Sample generation, mining and scene synthesis split over ranks (mtcnn.data.shards).

The ranks are simulated in this process (``shard=Shard(rank, world)``, one after the other) on
tiny synthetic inputs: the shards, read through the training reader as one dataset, must hold
exactly one process's samples (as a multiset, every field compared byte for byte); a rank
SIGKILLed mid-shard resumes its shard alone and the set still equals an uninterrupted run. The
last tests run the real ``torchrun --standalone --nproc_per_node 2`` on the commands, and kill
one of its ranks.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mtcnn.config import from_dict, to_dict
from mtcnn.config.data import LandmarkDataConfig, PNetDataConfig, SceneConfig
from mtcnn.data.annotations import ImageAnnotation, write_wider
from mtcnn.data.generate import generate_landmarks, generate_pnet
from mtcnn.data.datasets import MixedBatchLoader, composition_for
from mtcnn.data.h5 import FIELDS, KINDS, partial_path
from mtcnn.data.hard_examples import MiningConfig, mine_hard_examples
from mtcnn.data.readers import open_sample_file, open_samples
from mtcnn.data.scenes import ANNOTATION_NAME, LANDMARKS_NAME, MANIFEST_NAME, generate_scenes
from mtcnn.data.shards import Shard, ShardError, manifest_path, sample_files, write_manifest
from mtcnn.errors import DataError, OutputExistsError
from mtcnn.io import write_image_rgb
from mtcnn.nets import build_net
from mtcnn.weights import NET_NAMES, save_bundle
from tests_helpers import PROJECT_ROOT, bright_face_photo


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """9 photos with two bright 'faces' each (WIDER file, one unreadable image), 5 synthetic
    CNN_FacePoint faces, 4 backgrounds, and random-weight nets."""
    root = tmp_path_factory.mktemp("sharded")
    rng = np.random.default_rng(0)
    records = []
    for k in range(9):
        boxes = [[10 + 3 * k, 20, 60 + 3 * k, 70], [90, 40, 140, 95]]
        records.append(bright_face_photo(root / "images" / f"img{k}.jpg", (120, 160), boxes, 200 + 4 * k, rng))
    (root / "images" / "broken.jpg").write_bytes(b"broken")
    records.insert(4, ImageAnnotation(path=root / "images" / "broken.jpg", boxes=np.zeros((0, 4), np.float32),
                                      landmarks=np.zeros((0, 0, 2), np.float32), ignore=np.zeros(0, bool)))
    write_wider(root / "gt.txt", records, root / "images")
    lines = []
    for i in range(5):
        img = cv2.GaussianBlur(rng.integers(0, 256, (220, 200, 3), dtype=np.uint8), (0, 0), 2)
        cv2.ellipse(img, (100, 115), (50, 62), 0, 0, 360, (220, 180, 150 - 10 * i), -1)
        write_image_rgb(root / "faces" / f"face{i}.png", img)
        lines.append(f"{root / 'faces' / f'face{i}.png'} 55 145 75 165 80 100 120 100 100 125 84 148 116 148")
    (root / "faces.txt").write_text("\r\n".join(lines) + "\r\n")
    for i in range(4):
        bg = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (0, 0), 3)
        write_image_rgb(root / "bg" / f"bg{i}.png", bg)
    torch.manual_seed(0)
    save_bundle({n: build_net(n) for n in NET_NAMES}, root / "nets.pt")
    return root


def photos(root: Path) -> dict:
    return {"name": "photos", "format": "wider", "path": str(root / "gt.txt"), "images_root": str(root / "images")}


def faces(root: Path) -> dict:
    return {"name": "faces", "format": "cnn_facepoint", "path": str(root / "faces.txt")}


def pnet_config(root: Path, out: Path, **kw) -> PNetDataConfig:
    return from_dict(PNetDataConfig, {
        "workers": 1, "chunk_images": 2, "out": str(out), "seed": 3, "max_bad_fraction": 0.5,
        "sources": {"train": [photos(root)], "val": []},
        "landmarks": {"enabled": True, "sources": {"train": [faces(root)], "val": []}}, **kw,
    })  # fmt: skip


def mining_dict(root: Path, out: Path) -> dict:
    return {
        "test_mode": "PNet", "pnet": str(root / "nets.pt"), "out": str(out), "workers": 0, "batch_images": 2,
        "landmarks": True, "min_box_size": 12, "detector": {"thresholds": [0.0, 0.0], "min_face_size": 24},
        "sources": {"train": [photos(root)], "val": []},
        "landmark_sources": {"train": [faces(root)], "val": []},
    }  # fmt: skip


def rows(path: Path) -> dict[str, list[bytes]]:
    """Every sample of ``path`` (a file or a shard set, read as training reads it) as one byte
    string per row (all fields and the source path), sorted: a multiset to compare exactly."""
    reader = open_sample_file(path)
    out = {}
    for kind in KINDS:
        n = reader.counts()[kind]
        data = reader.get(kind, np.arange(n), FIELDS)
        sources = reader.row_sources(kind)
        keys = [b"".join(np.ascontiguousarray(data[name][i]).tobytes() for name in FIELDS if name != "source")
                + str(sources[i]).encode() for i in range(n)]
        out[kind] = sorted(keys)
    reader.close()
    return out


def assert_same_samples(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    assert {k: len(v) for k, v in ra.items()} == {k: len(v) for k, v in rb.items()}
    for kind in KINDS:
        assert ra[kind] == rb[kind], f"{kind} samples differ"


def run_ranks(fn, world: int, order=None):
    return [fn(Shard(r, world)) for r in (order or range(world))]


# ------------------------------------------------------------------------------------------
# the same samples as one process
# ------------------------------------------------------------------------------------------


def test_pnet_samples_of_two_ranks_equal_one_process(world, tmp_path):
    single = generate_pnet(pnet_config(world, tmp_path / "one"), "train", progress=False, shard=Shard())
    assert single.path == tmp_path / "one" / "pnet_train.h5" and not manifest_path(single.path).exists()

    final = tmp_path / "two" / "pnet_train.h5"
    first = generate_pnet(pnet_config(world, tmp_path / "two"), "train", progress=False, shard=Shard(1, 2))
    assert first.path == tmp_path / "two" / "pnet_train.rank01-of02.h5" and first.manifest is None
    assert first.items == 7  # ids 1, 3, ..., 13 of 15: 9 photos, 1 unreadable image, then the 5 landmark faces
    with pytest.raises(DataError, match="not every rank has finished"):
        open_samples([str(final)], None, 12)
    second = generate_pnet(pnet_config(world, tmp_path / "two"), "train", progress=False, shard=Shard(0, 2))
    assert second.manifest == manifest_path(final) and not final.exists()
    assert sample_files(final) == [tmp_path / "two" / "pnet_train.rank00-of02.h5", first.path]
    assert first.items + second.items == single.items
    assert sorted(first.skipped + second.skipped) == sorted(single.skipped) and len(single.skipped) == 1
    assert_same_samples(final, single.path)
    listed = json.loads(manifest_path(final).read_text())
    assert listed["counts"] == single.counts and sum(listed["counts"].values()) > 100
    assert any("all 2 shards complete" in line for line in second.lines())
    # the training opener takes the usual name, per-kind lists included
    reader = open_samples([str(final)], {"landmark": [str(final)]}, 12)
    assert reader.counts() == single.counts
    loader = MixedBatchLoader(final, composition_for("pnet", 48), steps_per_epoch=2, seed=1, expected_size=12)
    assert loader.counts == single.counts and loader.get_batch(0, 1)["images"].shape == (48, 3, 12, 12)


def test_landmark_samples_of_three_ranks_equal_one_process(world, tmp_path):
    def cfg(out):
        return from_dict(LandmarkDataConfig, {"workers": 1, "chunk_images": 1, "out": str(out), "seed": 5, "size": 24,
                                              "sources": {"train": [faces(world)], "val": []}})

    single = generate_landmarks(cfg(tmp_path / "one"), "train", progress=False, shard=Shard())
    summaries = run_ranks(lambda s: generate_landmarks(cfg(tmp_path / "three"), "train", progress=False, shard=s), 3,
                          order=[2, 0, 1])
    assert [s.manifest is not None for s in summaries] == [False, False, True]
    assert_same_samples(tmp_path / "three" / "landmark24_train.h5", single.path)


def test_mining_of_two_ranks_equals_one_process(world, tmp_path):
    single = mine_hard_examples(from_dict(MiningConfig, mining_dict(world, str(tmp_path / "one"))), "train",
                                progress=False, shard=Shard())
    summaries = run_ranks(lambda s: mine_hard_examples(from_dict(MiningConfig, mining_dict(world, str(tmp_path / "two"))),
                                                       "train", progress=False, shard=s), 2)
    final = tmp_path / "two" / "rnet_train.h5"
    assert summaries[-1].manifest == manifest_path(final)
    assert sum(s.processed for s in summaries) == single.processed
    assert_same_samples(final, single.path)
    assert sum(single.counts[k] for k in ("pos", "part", "neg")) > 20 and single.counts["landmark"] > 0
    # the combined recall report is the one-process report
    one = json.loads((tmp_path / "one" / "rnet_train.recall.json").read_text())
    two = json.loads((tmp_path / "two" / "rnet_train.recall.json").read_text())
    assert two["recall"] == one["recall"] and two["totals"] == one["totals"] and two["counts"] == one["counts"]
    assert one["recall"]["faces"] == 18


def scene_config(root: Path, out: Path) -> SceneConfig:
    return SceneConfig(backgrounds=str(root / "bg"), faces_train=str(root / "faces.txt"), faces_val=str(root / "faces.txt"),
                       out=str(out), workers=1, num_scenes=5, canvas=(160, 120), min_face=12)


def test_scenes_of_two_ranks_are_the_files_of_one_process(world, tmp_path):
    cfg = functools.partial(scene_config, world)
    generate_scenes(cfg(tmp_path / "one"), progress=False, shard=Shard())
    first = generate_scenes(cfg(tmp_path / "two"), progress=False, shard=Shard(0, 2))
    assert not first.complete and not (tmp_path / "two" / ANNOTATION_NAME).exists()
    assert any("once every rank has finished" in line for line in first.lines())
    second = generate_scenes(cfg(tmp_path / "two"), progress=False, shard=Shard(1, 2))
    assert second.complete and second.scenes == 5 and second.made == 2
    for name in (ANNOTATION_NAME, LANDMARKS_NAME, MANIFEST_NAME):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    for i in range(5):
        assert (tmp_path / "one" / f"images/{i:06d}.jpg").read_bytes() == (tmp_path / "two" / f"images/{i:06d}.jpg").read_bytes()


# ------------------------------------------------------------------------------------------
# a killed rank resumes its shard alone
# ------------------------------------------------------------------------------------------


def _run_until_killed(job: str, root: Path, out: Path, rank: int, world: int, kill_at: int) -> None:
    """Child process: run one rank and SIGKILL itself in the middle of its shard (after writing
    the ``kill_at``-th work unit's samples, before they are committed)."""
    import mtcnn.data.generate as gen
    import mtcnn.data.hard_examples as he

    module, name = (gen, "write_item") if job == "generate" else (he, "_mine_batch")
    real, calls = getattr(module, name), [0]

    def then_kill(*args, **kwargs):
        real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(module, name, then_kill)
    run_job(job, root, out, Shard(rank, world))


def run_job(job: str, root: Path, out: Path, shard: Shard):
    torch.set_num_threads(1)
    if job == "generate":
        return generate_pnet(pnet_config(root, out, chunk_images=1), "train", progress=False, shard=shard)
    return mine_hard_examples(from_dict(MiningConfig, mining_dict(root, str(out))), "train", progress=False, shard=shard)


@pytest.mark.parametrize("job,stage,kill_at", [("generate", "pnet", 3), ("mine", "rnet", 2)])
def test_a_killed_rank_resumes_its_shard_alone(world, tmp_path, job, stage, kill_at):
    reference = run_job(job, world, tmp_path / "ref", Shard())
    out = tmp_path / "killed"
    final = out / f"{stage}_train.h5"
    done0 = run_job(job, world, out, Shard(0, 2))
    child = mp.get_context("fork").Process(target=_run_until_killed, args=(job, world, out, 1, 2, kill_at))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert partial_path(Shard(1, 2).path(final)).is_dir() and not Shard(1, 2).path(final).exists()
    assert not manifest_path(final).exists()
    # the rerun: rank 0's finished shard is kept as it is, rank 1 continues its journal
    again0 = run_job(job, world, out, Shard(0, 2))
    assert again0.processed == 0 and again0.manifest is None
    assert Shard(0, 2).path(final).stat().st_mtime_ns == done0.path.stat().st_mtime_ns
    again1 = run_job(job, world, out, Shard(1, 2))
    if job == "generate":
        assert again1.resumed >= kill_at - 1 and again1.processed == again1.items - again1.resumed
    else:
        assert 0 < again1.processed < len([i for i in range(10) if (i // 2) % 2 == 1])
    assert again1.manifest == manifest_path(final)
    assert_same_samples(final, reference.path)


def test_a_finished_shard_of_other_settings_is_not_reused(world, tmp_path):
    generate_pnet(pnet_config(world, tmp_path), "train", progress=False, shard=Shard(0, 2))
    with pytest.raises(ShardError, match="other settings.*seed"):
        generate_pnet(pnet_config(world, tmp_path, seed=4), "train", progress=False, shard=Shard(0, 2))
    generate_pnet(pnet_config(world, tmp_path), "train", progress=False, shard=Shard(1, 2))
    # a complete set is complete output, for a split run and for one process alike
    for shard in (Shard(0, 2), Shard()):
        with pytest.raises(OutputExistsError, match="complete"):
            generate_pnet(pnet_config(world, tmp_path), "train", progress=False, shard=shard)
    redone = generate_pnet(pnet_config(world, tmp_path, seed=4), "train", progress=False, overwrite=True,
                           shard=Shard(0, 2))
    assert redone.processed == redone.items and redone.manifest is None  # rank 1's shard is still seed 3
    assert not manifest_path(tmp_path / "pnet_train.h5").exists()
    with pytest.raises(DataError, match="not every rank has finished"):
        open_samples([str(tmp_path / "pnet_train.h5")], None, 12)
    with pytest.raises(ShardError, match="rank01-of02.h5 was made with other settings"):
        write_manifest(tmp_path / "pnet_train.h5", 2)
    last = generate_pnet(pnet_config(world, tmp_path, seed=4), "train", progress=False, overwrite=True, shard=Shard(1, 2))
    assert last.manifest == manifest_path(tmp_path / "pnet_train.h5")


# ------------------------------------------------------------------------------------------
# the real launcher
# ------------------------------------------------------------------------------------------


needs_torchrun = pytest.mark.skipif(
    importlib.util.find_spec("torch.distributed.run") is None or not torch.distributed.is_available(),
    reason="torchrun (torch.distributed) is not available")


def torchrun(script: str, *args: str, cwd: Path, wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(PROJECT_ROOT / script), *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=240)


@needs_torchrun
@pytest.mark.parametrize("script", ["tools/gen_hard_example.py", "prepare_data/gen_12net_data.py", "prepare_data/gen_scenes.py"])
def test_torchrun_two_processes_make_what_one_process_makes(world, tmp_path, script):
    if "hard" in script:
        single = mine_hard_examples(from_dict(MiningConfig, mining_dict(world, str(tmp_path / "one"))), "train",
                                    progress=False, shard=Shard()).path
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(mining_dict(world, str(tmp_path / "two"))))
        args = ["--test_mode", "PNet", "--split", "train", "--config", str(tmp_path / "cfg.yaml")]
    elif "12net" in script:
        single = generate_pnet(pnet_config(world, tmp_path / "one"), "train", progress=False, shard=Shard()).path
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(pnet_config(world, tmp_path / "unused"))))
        args = ["--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "two"), "--quiet"]
    else:
        cfg = scene_config(world, tmp_path / "one")
        generate_scenes(cfg, progress=False, shard=Shard())
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
        args = ["--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "two"), "--quiet"]
    proc = torchrun(script, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if "scenes" in script:
        assert "rank 1 of 2:" in proc.stdout and "rank 0 of 2: scenes: 5" in proc.stdout
        for name in (ANNOTATION_NAME, LANDMARKS_NAME, MANIFEST_NAME):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
        return
    final = tmp_path / "two" / single.name
    assert "all 2 shards complete" in proc.stdout and "rank 1 of 2: shard done" in proc.stdout
    assert sample_files(final) == Shard(0, 2).paths(final)
    assert_same_samples(final, single)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
    except OSError:
        return None
    return int(env[b"RANK"]) if b"RANK" in env else None


@needs_torchrun
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_torchrun_sigkill_of_one_rank_then_a_rerun_gives_the_same_samples(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for k in range(100):
        boxes = [[50 + k % 50, 60, 200 + k % 50, 230], [300, 100, 420, 240]]
        records.append(bright_face_photo(tmp_path / "images" / f"img{k}.jpg", (480, 640), boxes, 150 + k, rng))
    write_wider(tmp_path / "gt.txt", records, tmp_path / "images")
    cfg = from_dict(PNetDataConfig, {"workers": 1, "chunk_images": 2, "seed": 3, "out": str(tmp_path / "one"),
                                     "sources": {"train": [photos(tmp_path)], "val": []}, "landmarks": {"enabled": False}})
    single = generate_pnet(cfg, "train", progress=False, shard=Shard()).path
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    args = ["--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "two"), "--quiet"]
    final = tmp_path / "two" / "pnet_train.h5"
    journal = partial_path(Shard(1, 2).path(final)) / "commit.json"
    proc = torchrun("prepare_data/gen_12net_data.py", *args, cwd=tmp_path, wait=False)
    try:
        while not (journal.exists() and json.loads(journal.read_text() or "{}").get("bytes", {}).get("items", 0) >= 8 * 6):
            assert proc.poll() is None and not Shard(1, 2).path(final).exists(), "rank 1 finished before it was killed"
            time.sleep(0.01)
        victims = [p for p in _children(proc.pid) if _rank_of(p) == 1]
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "SIGKILL" in out
    assert not manifest_path(final).exists() and not Shard(1, 2).path(final).exists()
    again = torchrun("prepare_data/gen_12net_data.py", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    lines = again.stdout.splitlines()
    done_before = {int(nxt.split()[1]): int(line.split(", ")[1].split()[0])  # rank -> images done before the rerun
                   for line, nxt in zip(lines, lines[1:]) if line.startswith("images: 50 in job") and nxt.startswith("rank ")}
    assert done_before.keys() == {0, 1} and done_before[1] >= 6, again.stdout
    assert_same_samples(final, single)
