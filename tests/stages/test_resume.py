"""A run killed mid-epoch and resumed ends where an uninterrupted run of the same seed ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from ihl import config
from ihl.checkpoint import safe_load
from ihl.edge.live import LiveLog
from ihl.train import train

# Trains in a child process that SIGKILLs itself right after optimisation step KILL_AT:
# no cleanup, no finally blocks, exactly what a preempted node does.
CHILD = """
import json, os, signal, sys
from pathlib import Path
from ihl import config
from ihl.edge.live import LiveLog
from ihl.train import train

cfg = config.from_dict(json.loads(sys.argv[1]))
kill_at = int(sys.argv[3])


def on_step(iteration):
    if iteration == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


out = Path(sys.argv[2])
train(cfg, out, progress=False, on_step=on_step, epoch_log=LiveLog(out / "live"))
"""
KILL_AT = 8
"""Epoch 1, step 3 of 5; the last checkpoint (every 3 steps) is then that of step 6."""


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]) and a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), f"{what}: {key}"
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{what}: {key}"


def test_killed_and_resumed_run_matches_uninterrupted_run(tiny_cfg, straight_run, tmp_path):
    straight, reference = straight_run
    out = tmp_path / "killed"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config.to_dict(tiny_cfg)), str(out), str(KILL_AT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    at_kill = safe_load(out / "checkpoints" / "latest.pt")
    assert (at_kill["state"]["epoch"], at_kill["state"]["step"]) == (1, 1)
    assert not list((out / "checkpoints").glob(".*")), "a temporary file was left behind"

    resumed = train(tiny_cfg, out, resume=True, progress=False, epoch_log=LiveLog(out / "live"))

    assert resumed == pytest.approx(reference, nan_ok=True)
    want = safe_load(straight / "checkpoints" / "latest.pt")
    got = safe_load(out / "checkpoints" / "latest.pt")
    assert got["state"]["iteration"] == want["state"]["iteration"] == 10
    _assert_same(got["model"], want["model"], "model")
    _assert_same(got["criterion"], want["criterion"], "flow")
    for index, state in want["optimizer"]["state"].items():
        _assert_same(got["optimizer"]["state"][index], state, "optimizer")
    assert got["scheduler"]["last_epoch"] == want["scheduler"]["last_epoch"]
    changed = [k for k, v in at_kill["model"].items() if not torch.equal(v, got["model"][k])]
    assert changed, "the resumed run did not train"

    lines = (out / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["step", "0", "1"]
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert "AP" in summary["val"]
