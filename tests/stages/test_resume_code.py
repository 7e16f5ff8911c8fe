"""A training state resumes only under the code that wrote it: an edit to the training code
(``ihl.train`` and every ihl module it imports) is never mistaken for a resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ihl.checkpoint import CheckpointError, safe_load
from ihl.sources import PACKAGE_DIR, closure, fingerprint
from ihl.train import TRAINING_CODE, train


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """A copy of the ihl package to edit."""
    copy = tmp_path_factory.mktemp("src") / "ihl"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(
    ("edited", "counts"),
    [
        ("losses.py", True),  # imported at the top of ihl.train
        ("runtime.py", True),  # imported inside a function (evaluate's ONNX runtime)
        ("edge/live.py", True),  # the stage's DVCLive log
        ("cli/main.py", False),  # the command line only passes arguments through
        ("edge/registry/store.py", False),
    ],
)
def test_the_fingerprint_changes_with_the_training_code_only(package_copy, edited, counts):
    before = fingerprint(TRAINING_CODE, package_copy)
    path = package_copy / edited
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        assert (fingerprint(TRAINING_CODE, package_copy) != before) is counts
    finally:
        path.write_text(original)


def test_the_training_code_is_what_the_train_stage_runs():
    modules = closure(TRAINING_CODE)
    assert {"ihl", "ihl.losses", "ihl.models.pose", "ihl.data.transforms", "ihl.runtime"} <= set(
        modules
    )
    assert not [m for m in modules if m.startswith("ihl.cli")]


@pytest.fixture
def other_code(straight_run, tmp_path) -> Path:
    """A copy of a finished run whose latest.pt was written by other training code."""
    out = tmp_path / "run"
    shutil.copytree(straight_run[0] / "checkpoints", out / "checkpoints")
    latest = out / "checkpoints" / "latest.pt"
    state = safe_load(latest)
    assert state["code_fingerprint"] == fingerprint(TRAINING_CODE)
    state["code_fingerprint"] = "0" * 64
    torch.save(state, latest)
    return out


def test_resume_refuses_a_state_of_other_code(tiny_cfg, other_code):
    with pytest.raises(CheckpointError, match="other training code"):
        train(tiny_cfg, other_code, resume=True, progress=False)


def test_resume_matching_retrains_a_state_of_other_code(tiny_cfg, other_code, caplog):
    train(tiny_cfg, other_code, resume="matching", progress=False)
    after = safe_load(other_code / "checkpoints" / "latest.pt")
    assert after["code_fingerprint"] == fingerprint(TRAINING_CODE)
    assert after["state"]["iteration"] == 10
    assert "other training code" in caplog.text and "training from scratch" in caplog.text


def test_resume_matching_retrains_a_finished_run(tiny_cfg, straight_run, tmp_path, caplog):
    """`dvc repro` runs the stage again only after it removed the finished run's logs, which
    a resume of no epochs would not write again."""
    out = tmp_path / "run"
    shutil.copytree(straight_run[0] / "checkpoints", out / "checkpoints")
    train(tiny_cfg, out, resume="matching", progress=False)
    assert "holds a finished run" in caplog.text
    assert safe_load(out / "checkpoints" / "latest.pt")["state"]["iteration"] == 10
