"""``mtcnn-gen-12net-data`` / ``prepare_data/gen_12net_data.py``: P-Net training samples."""

from __future__ import annotations

from mtcnn.commands.common import data_job_main


def main(argv: list[str] | None = None) -> int:
    from mtcnn.config.data import PNetDataConfig
    from mtcnn.data.generate import generate_pnet

    return data_job_main(argv, prog="gen_12net_data.py", description="P-Net training samples (12x12 pos / part / neg crops + landmark samples) into one HDF5 file.",
                         config_cls=PNetDataConfig, default_config_name="data_pnet.yaml", run=generate_pnet)
