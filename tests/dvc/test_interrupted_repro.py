"""`dvc repro` killed while training, run again: training resumes where its last checkpoint
left it (dvc.yaml persists model/checkpoints and trains with --resume-matching), where it
used to delete the checkpoints and start over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from project_copy import TINY, dvc, make_project, tool_env

from ihl.checkpoint import safe_load

pytestmark = pytest.mark.slow

EPOCHS = 20
"""Epochs of two steps each: many, so that the kill lands before the last one even when this
process is descheduled for a second or two (with 6, a loaded machine once let all of them
finish first)."""
PARAMS = TINY | {
    "synth": {"train": 16, "val": 4, "size": "160x120"},
    "train": {"epochs": EPOCHS, "batch_size": 8, "lr_steps": []},
}


def test_an_interrupted_repro_resumes_training(tmp_path):
    root = make_project(tmp_path / "project", PARAMS)
    dvc("repro", "prepare", cwd=root)
    latest = root / "model" / "checkpoints" / "latest.pt"
    run = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train"],
        cwd=root, env=tool_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not latest.is_file():  # first written, whole, when epoch 1 ends
            assert run.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # a preempted node: no cleanup at all
        run.wait()
    reached = safe_load(latest)["state"]["epoch"]
    assert 1 <= reached < EPOCHS

    done = dvc("repro", "train", cwd=root)
    output = done.stdout + done.stderr
    assert f"epoch {reached + 1}/{EPOCHS}" in output
    assert f"epoch 1/{EPOCHS}" not in output, "training started over"
    assert safe_load(latest)["state"]["epoch"] == EPOCHS
