"""NaN and infinity are rejected by every float setting, in configs and on the command line."""

import dataclasses
import math
import typing

import pytest

from mtcnn.config import ConfigError, DetectorConfig, from_dict, load_config
from mtcnn.config.data import LandmarkDataConfig, PNetDataConfig, SceneConfig
from mtcnn.data.hard_examples import MiningConfig
from mtcnn.pipeline import PipelineConfig
from mtcnn.config.train import TrainConfig


def float_settings(cls, prefix=()):
    """Every setting of a config class that holds floats, as (key path, how many elements)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        ann = hints[f.name]
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
            ann = args[0]
        if dataclasses.is_dataclass(ann):
            yield from float_settings(ann, prefix + (f.name,))
        elif ann is float:
            yield prefix + (f.name,), None
        elif typing.get_origin(ann) is tuple and typing.get_args(ann) and all(a is float for a in typing.get_args(ann)):
            yield prefix + (f.name,), len(typing.get_args(ann))


def nested(path, value):
    out = value
    for key in reversed(path):
        out = {key: out}
    return out


CLASSES = [DetectorConfig, MiningConfig, TrainConfig, PNetDataConfig, LandmarkDataConfig, SceneConfig, PipelineConfig]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_float_setting_rejects_nan_and_infinity(cls):
    found = list(float_settings(cls))
    assert found, cls
    for path, n in found:
        for bad in (math.nan, math.inf, -math.inf):
            value = bad if n is None else [bad] * n
            with pytest.raises(ConfigError, match="finite") as err:
                from_dict(cls, nested(path, value))
            assert ".".join(path) in str(err.value)


def test_yaml_and_overrides(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text("min_face_size: .nan\n")
    with pytest.raises(ConfigError, match="min_face_size=nan must be a finite number"):
        load_config(DetectorConfig, cfg)
    with pytest.raises(ConfigError, match=r"optim\.lr=inf must be a finite number"):
        load_config(TrainConfig, None, ["optim.lr=.inf"])


@pytest.mark.parametrize("args", [["--min-face", "nan"], ["--thresholds", "nan", "0.5", "0.5"], ["--factor", "nan"],
                                  ["--factor", "inf"], ["--min-face=-inf"]])
def test_detect_cli_rejects_non_finite_numbers(tmp_path, capsys, args):
    from mtcnn.commands.detect import main as detect_main

    with pytest.raises(SystemExit) as e:
        detect_main([str(tmp_path / "x.jpg"), *args])
    assert e.value.code == 2 and "is not a finite number" in capsys.readouterr().err


def test_detector_rejects_nan_settings():
    from mtcnn.detector import MTCNN

    for kwargs in ({"min_face_size": math.nan}, {"factor": math.nan}, {"thresholds": (math.nan, 0.5, 0.5)}):
        with pytest.raises(ConfigError, match="finite"):
            MTCNN(nets={}, **kwargs)
