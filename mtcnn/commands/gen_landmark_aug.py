"""``mtcnn-gen-landmark-aug`` / ``prepare_data/gen_landmark_aug.py``: landmark training samples."""

from __future__ import annotations

from mtcnn.commands.common import data_job_main


def main(argv: list[str] | None = None) -> int:
    from mtcnn.config.data import LandmarkDataConfig
    from mtcnn.data.generate import generate_landmarks
    from mtcnn.nets import MTCNN_NETS, get_net_spec

    return data_job_main(argv, prog="gen_landmark_aug.py", description="Landmark training samples (SPEC §1 augmentation of CNN_FacePoint faces) into HDF5.",
                         config_cls=LandmarkDataConfig, default_config_name="landmarks_aug.yaml",
                         run=generate_landmarks, sizes=tuple(get_net_spec(n).crop_size for n in MTCNN_NETS))
