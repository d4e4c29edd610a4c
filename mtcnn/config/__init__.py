"""Typed configuration: the mechanism (:mod:`.core`), path placeholders and shipped defaults
(:mod:`.paths`), and one schema module per kind of YAML file:

================================  =========================================================
``defaults/train_{p,r,o}net.yaml``  :class:`mtcnn.config.train.TrainConfig`
(landmark regression runs)        :class:`mtcnn.config.train.LandmarkTrainConfig`
``defaults/scenes.yaml``          :class:`mtcnn.config.data.SceneConfig`
``defaults/data_pnet.yaml``       :class:`mtcnn.config.data.PNetDataConfig`
``defaults/landmarks_aug.yaml``   :class:`mtcnn.config.data.LandmarkDataConfig`
``defaults/mine.yaml``            :class:`mtcnn.data.hard_examples.MiningConfig`
``defaults/pipeline*.yaml``       :class:`mtcnn.pipeline.PipelineConfig`
detector presets                  :class:`mtcnn.config.detector.DetectorConfig`
================================  =========================================================
"""

from mtcnn.config.core import (
    ConfigError,
    apply_overrides,
    bounded,
    find_config,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    save_resolved,
    to_dict,
)
from mtcnn.config.detector import DETECTOR_PRESETS, DetectorConfig
from mtcnn.config.paths import (
    data_hint,
    data_root,
    default_config,
    default_config_names,
    gen_root,
    portable_config,
    portable_path,
    resolve_path,
    runs_root,
)

__all__ = [
    "ConfigError", "DETECTOR_PRESETS", "DetectorConfig", "apply_overrides", "bounded", "data_hint", "data_root", "default_config",
    "default_config_names", "find_config", "from_dict", "gen_root", "load_config", "load_yaml", "parse_override",
    "portable_config", "portable_path", "resolve_path", "runs_root", "save_resolved", "to_dict",
]
