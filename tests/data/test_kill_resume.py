"""SIGKILL at random moments during sample generation and hard-example mining, then resume:
the finished file must equal an uninterrupted run's, every time (the driver forks each run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests_helpers import PROJECT_ROOT

DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.mark.parametrize("job,kills", [("generate", 15), ("mine", 8)])
def test_random_kills_then_resume_equal_an_uninterrupted_run(tmp_path, job, kills):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path), job, str(kills), "7"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["differences"] == [], result
    assert result["hit_running_job"] >= kills // 3, result  # most kills landed mid-job, not after it
    assert sum(result["rows"].values()) > 100, result
