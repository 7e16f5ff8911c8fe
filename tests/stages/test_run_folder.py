"""One run per run folder, nothing left behind by a killed one, and a resume only of the
same run: the training stage under retries and repeated pipeline runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ihl.checkpoint import CheckpointError, safe_load
from ihl.files import FolderBusyError, folder_lock, remove_temporaries
from ihl.train import train

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from ihl.files import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_folder_lock_has_one_holder_across_processes(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):  # the kernel released the killed holder's lock
        with pytest.raises(FolderBusyError):
            with folder_lock(tmp_path):
                pass


def test_leftover_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".latest.pt.0a1b2c3d.tmp", "latest.pt", ".lock", ".notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in remove_temporaries(tmp_path)] == [".latest.pt.0a1b2c3d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".notes.tmp", "latest.pt"]


def test_a_second_run_on_a_held_folder_fails_before_writing(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    with folder_lock(out):
        with pytest.raises(FolderBusyError, match=str(out)):
            train(tiny_cfg, out, progress=False)
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_a_run_removes_what_a_killed_run_left(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    leftover = out / "checkpoints" / ".latest.pt.deadbeef.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a checkpoint")
    tiny_cfg.train.epochs = tiny_cfg.train.val_interval = 1
    train(tiny_cfg, out, progress=False)
    assert not leftover.exists()
    assert (out / "checkpoints" / "latest.pt").is_file()


@pytest.fixture
def finished(straight_run, tmp_path) -> Path:
    """A copy of a finished run's folder (its latest.pt has no data fingerprint)."""
    out = tmp_path / "run"
    shutil.copytree(straight_run[0] / "checkpoints", out / "checkpoints")
    return out


def test_resume_refuses_another_config(tiny_cfg, finished):
    tiny_cfg.train.lr = 0.5
    with pytest.raises(CheckpointError, match=r"another config \(train.lr: 0.002 -> 0.5\)"):
        train(tiny_cfg, finished, resume=True, progress=False)


def test_resume_refuses_other_data(tiny_cfg, finished):
    with pytest.raises(CheckpointError, match="other data"):
        train(tiny_cfg, finished, resume=True, progress=False, data_fingerprint="f" * 64)


@pytest.mark.slow
def test_resume_matching_trains_from_scratch_on_a_change(tiny_cfg, finished):
    before = safe_load(finished / "checkpoints" / "latest.pt")
    tiny_cfg.train.epochs = tiny_cfg.train.val_interval = 1
    started = time.time()
    train(tiny_cfg, finished, resume="matching", progress=False, data_fingerprint="f" * 64)
    after = safe_load(finished / "checkpoints" / "latest.pt")
    assert (finished / "checkpoints" / "latest.pt").stat().st_mtime >= started
    assert after["data_fingerprint"] == "f" * 64
    assert after["state"]["epoch"] == 1 and before["state"]["epoch"] == 2


def test_dvc_train_stage_keeps_and_resumes_its_checkpoints():
    """`dvc repro` deleted model/checkpoints before the stage ran and the stage never resumed."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stage["outs"]}
    assert outs["model/checkpoints"] == {"model/checkpoints": {"persist": True}}
    assert "--resume-matching" in stage["cmd"]
    assert "--data-index data/index.json" in stage["cmd"]
    assert "data/index.json" in stage["deps"]
