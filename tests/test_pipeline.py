"""The whole chain on the tiny config: scenes -> ... -> trained O-Net -> evaluation, with resume."""

import json
import subprocess
import sys

import pytest
import yaml

from mtcnn.config import ConfigError, default_config, load_config
from mtcnn.pipeline import PipelineConfig, plan
from tests_helpers import PROJECT_ROOT

TINY = default_config("pipeline_tiny.yaml")


def test_configs_load_and_chain_paths(tmp_path):
    for name in ("pipeline.yaml", "pipeline_tiny.yaml", "pipeline_default.yaml"):
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


def _finished_work_dir(tmp_path):
    """A work_dir where every step looks finished with the tiny config's settings."""
    from mtcnn.pipeline import _record_path, pipeline_steps

    cfg = load_config(PipelineConfig, TINY, [f"work_dir={tmp_path}"])
    for name, settings, output in pipeline_steps(cfg, plan(cfg)):
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("finished")
        record = _record_path(tmp_path, name)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(yaml.safe_dump(settings))
    return cfg


def test_changed_settings_on_a_finished_pipeline_are_refused_in_full(tmp_path, capsys):
    from mtcnn.commands.run_pipeline import main as run_pipeline_main
    from mtcnn.pipeline import run_pipeline

    cfg = _finished_work_dir(tmp_path)
    (tmp_path / "pipeline.resolved.yaml").write_text("the earlier run's\n")
    # unchanged, or changed only in speed settings: every step is skipped
    faster = load_config(PipelineConfig, TINY, [f"work_dir={tmp_path}", "scenes.workers=1", "train_pnet.data.num_workers=2"])
    assert run_pipeline(faster) == tmp_path / "mtcnn_trained.pt"
    assert "skip evaluate" in capsys.readouterr().err
    (tmp_path / "pipeline.resolved.yaml").write_text("the earlier run's\n")
    code = run_pipeline_main([str(TINY), f"work_dir={tmp_path}", "train_pnet.epochs=6", "scenes.num_train=61"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "step scenes/train" in err and "scenes.num_train was 60, now 61" in err
    assert "delete" in err and str(tmp_path / "runs" / "pnet" / "pnet.pt") in err
    assert (tmp_path / "pipeline.resolved.yaml").read_text() == "the earlier run's\n"
    with pytest.raises(ConfigError, match=r"step train_pnet .*train_pnet\.epochs was 4, now 6"):
        run_pipeline(load_config(PipelineConfig, TINY, [f"work_dir={tmp_path}", "train_pnet.epochs=6"]))
    with pytest.raises(ConfigError, match=r"mine_pnet\.detector\.thresholds was \[0\.3, 0\.1\], now \[0\.2, 0\.1\]"):
        run_pipeline(load_config(PipelineConfig, TINY, [f"work_dir={tmp_path}", "mine_pnet.detector.thresholds=[0.2,0.1]"]))


def test_samples_of_finished_training_steps_are_not_regenerated(tmp_path, capsys):
    """Weights committed by an earlier effort resume the pipeline without their samples."""
    from mtcnn.pipeline import run_pipeline

    cfg = _finished_work_dir(tmp_path)
    for name in ("pnet_train.h5", "pnet_val.h5", "rnet_train.h5", "rnet_val.h5"):
        (tmp_path / "samples" / name).unlink()
    assert run_pipeline(cfg) == tmp_path / "mtcnn_trained.pt"
    err = capsys.readouterr().err
    assert "skip pnet_data: train_pnet is complete" in err and "skip mine_pnet: train_rnet is complete" in err
    assert not (tmp_path / "samples" / "pnet_train.h5").exists() and not (tmp_path / "samples" / "rnet_val.h5").exists()
    # The O-Net samples are still needed while O-Net is untrained: their step is not skipped.
    (tmp_path / "runs" / "onet" / "onet.pt").unlink()
    run_pipeline(cfg, stop_after="mine_rnet")
    err = capsys.readouterr().err
    assert "skip mine_rnet: train_onet" not in err and "skip mine_rnet/val" in err


def test_options_newer_than_a_finished_step_count_as_changes_only_off_their_default(tmp_path, capsys):
    """Records written before an option existed lack it: at its default the step is still the
    same step; set to anything else it is a change."""
    from mtcnn.pipeline import _record_path, run_pipeline

    cfg = _finished_work_dir(tmp_path)
    record = _record_path(tmp_path, "train_onet")
    stored = yaml.safe_load(record.read_text())
    del stored["loss"]["landmark_kind"], stored["data"]["mask_prob"]
    record.write_text(yaml.safe_dump(stored))
    assert run_pipeline(cfg) == tmp_path / "mtcnn_trained.pt"
    assert "skip train_onet" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"train_onet\.loss\.landmark_kind was '<absent>', now 'l1'"):
        run_pipeline(load_config(PipelineConfig, TINY, [f"work_dir={tmp_path}", "train_onet.loss.landmark_kind=l1"]))
