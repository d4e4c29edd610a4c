"""What a resumed or refused sample job does with the partial file and the files beside it."""

from __future__ import annotations

import numpy as np
import pytest

from kill_driver import make_world, source
from mtcnn.config import from_dict
from mtcnn.config.data import PNetDataConfig
from mtcnn.data.generate import GenerationError, generate_pnet
from mtcnn.data.h5 import SampleFileError, SampleWriter, partial_path
from mtcnn.data.journal import describe_difference


def _cfg(root, out, **kw):
    return from_dict(PNetDataConfig, {"workers": 1, "chunk_images": 2, "out": str(out), "seed": 3,
                                      "sources": {"train": [source(root)], "val": []},
                                      "landmarks": {"enabled": False}, **kw})


def test_difference_names_the_setting_and_both_values_in_full():
    long = "x" * 120
    stored = f"sampling:\n  pos_iou: 0.65\n  part_iou: 0.4\nname: {long}a\n"
    now = f"sampling:\n  pos_iou: 0.7\n  part_iou: 0.4\nname: {long}b\n"
    text = describe_difference("config", stored, now)
    assert "sampling.pos_iou is 0.65 in the partial file, 0.7 now" in text
    assert f"name is '{long}a' in the partial file, '{long}b' now" in text
    assert "part_iou" not in text
    assert describe_difference("seed", 1, 2) == "attribute 'seed' differs: 1 in the partial file, 2 now"


def test_refused_resume_names_the_key(tmp_path):
    path = tmp_path / "a.h5"
    w = SampleWriter(path, 12, {"seed": 1, "config": "sampling: {pos_iou: 0.65}\n"})
    w.commit([0])
    w.close(complete=False)
    with pytest.raises(SampleFileError, match=r"sampling\.pos_iou is 0\.65 in the partial file, 0\.7 now"):
        SampleWriter(path, 12, {"seed": 1, "config": "sampling: {pos_iou: 0.7}\n"}, resume=True)


def _interrupt_after_first_commit(cfg):
    """A partial file as a killed run leaves it: stop the job right after its first commit."""
    real_commit = SampleWriter.commit

    def commit_then_stop(self, ids):
        real_commit(self, ids)
        raise KeyboardInterrupt

    SampleWriter.commit = commit_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            generate_pnet(cfg, "train", progress=False)
    finally:
        SampleWriter.commit = real_commit


def test_refused_run_keeps_the_config_beside_the_partial_file_and_overwrite_starts_over(tmp_path):
    make_world(tmp_path, 6)
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, out)
    _interrupt_after_first_commit(cfg)
    partial = partial_path(out / "pnet_train.h5")
    saved = out / "pnet_train.config.yaml"
    assert partial.is_dir() and saved.is_file()
    before = saved.read_text()
    other = _cfg(tmp_path, out, sampling={"pos_iou": 0.7})
    with pytest.raises(GenerationError, match="sampling.pos_iou is 0.65 in the partial file, 0.7 now"):
        generate_pnet(other, "train", progress=False)
    assert saved.read_text() == before  # the refused run did not claim the old partial file
    # --overwrite clears the stale partial file instead of resuming (or refusing) it
    summary = generate_pnet(other, "train", overwrite=True, progress=False)
    assert summary.resumed == 0 and summary.processed == 6 and not partial.exists()
    assert "pos_iou: 0.7" in saved.read_text()
    reference = generate_pnet(_cfg(tmp_path, tmp_path / "ref", sampling={"pos_iou": 0.7}), "train", progress=False)
    assert summary.counts == reference.counts and np.sum(list(summary.counts.values())) > 0


def test_partial_file_of_an_older_version_is_removed_with_a_notice(tmp_path):
    path = tmp_path / "pnet_train.h5"
    legacy = tmp_path / "pnet_train.partial.h5"
    legacy.write_bytes(b"HDF5 written in place")
    w = SampleWriter(path, 12, {"seed": 1}, resume=True)
    assert not legacy.exists() and w.notice.startswith(f"removed {legacy}") and "\n" not in w.notice
    w.close()
    assert path.is_file()
