"""The whole chain on the tiny config: scenes -> ... -> trained O-Net -> evaluation, with resume."""

import json
import subprocess
import sys

import pytest

from mtcnn.config import ConfigError, default_config, load_config
from mtcnn.pipeline import PipelineConfig, plan
from tests_helpers import PROJECT_ROOT

TINY = default_config("pipeline_tiny.yaml")


def test_configs_load_and_chain_paths(tmp_path):
    for name in ("pipeline.yaml", "pipeline_tiny.yaml"):
        cfg = load_config(PipelineConfig, default_config(name), [f"work_dir={tmp_path}"])
        steps = plan(cfg)
        assert steps["train_pnet"].data.train == [str(tmp_path / "samples" / "pnet_train.h5")]
        assert steps["mine_pnet"].pnet == steps["mine_rnet"].pnet == str(tmp_path / "runs" / "pnet" / "pnet.pt")
        assert steps["train_rnet"].data.train == [str(tmp_path / "samples" / "rnet_train.h5")]
        assert steps["train_onet"].data.val == [str(tmp_path / "samples" / "onet_val.h5")]
        assert steps["mine_pnet"].sources.train[0].path == str(tmp_path / "scenes" / "train" / "scenes_bbx_gt.txt")
    with pytest.raises(ConfigError, match="did you mean 'train_pnet'"):
        load_config(PipelineConfig, TINY, ["trian_pnet.epochs=3"])
    with pytest.raises(ConfigError, match="must be 'rnet'"):
        load_config(PipelineConfig, TINY, ["train_rnet.net=onet"])


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_and_resume(shared_data, tmp_path):
    if not (shared_data / "nonface_scenes").is_dir() or not (shared_data / "cnn_facepoint").is_dir():
        pytest.skip("needs nonface_scenes and cnn_facepoint")
    command = [sys.executable, str(PROJECT_ROOT / "tools" / "run_pipeline.py"), str(TINY), f"work_dir={tmp_path}"]
    # First run stops after P-Net training, as an interrupted run would...
    first = subprocess.run(command + ["--stop-after", "train_pnet"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "runs" / "pnet" / "pnet.pt").exists() and not (tmp_path / "samples" / "rnet_train.h5").exists()
    # ...and the second picks up there: finished steps are skipped, the rest run.
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "skip train_pnet" in second.stderr and "skip scenes/train" in second.stderr
    assert "run mine_pnet/train" in second.stderr
    assert (tmp_path / "mtcnn_trained.pt").exists()
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    # The trained cascade finds the faces of the composite validation scenes.
    assert report["faces"] > 0 and report["recall"] >= 0.5, report
    third = subprocess.run(command, capture_output=True, text=True)
    assert third.returncode == 0 and "skip evaluate" in third.stderr
