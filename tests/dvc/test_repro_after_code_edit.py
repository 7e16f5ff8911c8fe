"""`dvc repro` after an edit to the training code retrains: the finished checkpoint is not
resumed for zero epochs (which left final.pt of the old code and no training curves, and
failed with "output 'model/live/plots/metrics' does not exist")."""

from __future__ import annotations

import pytest
from project_copy import TINY, dvc, make_project, tool_env

from ihl.checkpoint import safe_load
from ihl.sources import fingerprint
from ihl.train import TRAINING_CODE

pytestmark = pytest.mark.slow


def test_repro_after_a_code_edit_retrains(tmp_path):
    root = make_project(tmp_path / "project", TINY)
    env = tool_env(PYTHONPATH=str(root))  # the stages run the project's own ihl, as in a clone
    dvc("repro", "train", cwd=root, env=env)

    losses = root / "ihl" / "losses.py"
    losses.write_text(losses.read_text() + "\n# an edit to the training code\n")
    done = dvc("repro", "train", cwd=root, env=env)

    output = done.stdout + done.stderr
    assert "other training code" in output and "training from scratch" in output
    assert "epoch 1/1" in output
    latest = safe_load(root / "model" / "checkpoints" / "latest.pt")
    assert latest["code_fingerprint"] == fingerprint(TRAINING_CODE, root / "ihl")
    assert (root / "model" / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
