"""Training and evaluation across gloo ranks on the CPU: sharded validation equals one process,
a failure on one rank stops them all, a resume needs the world size that saved the run.

Each rank is a plain process (no torchrun, which would kill the others itself) with the
environment torchrun would give it; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ihl import config
from ihl.config import DetectorConfig
from ihl.data.synth import make_coco_synth
from ihl.detection.models import build_detector, save_detector

pytestmark = pytest.mark.slow

RANK = """
import json, os, sys
from pathlib import Path
import torch
import torch

from ihl import config
from ihl.config import DetectorConfig
from ihl.data.synth import make_coco_synth
from ihl.detection.models import build_detector, save_detector
from ihl.train import TrainStep, train
from ihl.evaluate import evaluate

mode, arg, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
rank = int(os.environ["RANK"])
if mode == "evaluate":
    import ihl.detection.boxap as boxap
    detect_images = boxap.detect_images
    def counted(model, cfg, image_dir, images):
        print(f"DETECTING {len(images)}", flush=True)
        return detect_images(model, cfg, image_dir, images)
    boxap.detect_images = counted
    metrics = evaluate(Path(arg["checkpoint"]), out, device="cpu",
                       batch_size=arg.get("batch", 2), progress=False,
                       boxes=arg.get("boxes", "detections"), data_root=arg.get("data_root"),
                       detector=arg.get("detector"))
else:
    cfg = config.from_dict(arg)
    on_step = None
    if mode == "die":
        def on_step(iteration):
            if iteration == 2 and rank == 2:
                os._exit(3)
    if mode == "nan":
        forward, calls = TrainStep.forward, [0]
        def poisoned(self, images, targets):
            terms = forward(self, images, targets)
            calls[0] += 1
            if rank == 1 and calls[0] == 2:
                terms["loss"] = terms["loss"] * float("nan")
            return terms
        TrainStep.forward = poisoned
    metrics = train(cfg, out, resume=mode == "resume", device="cpu", progress=False,
                    on_step=on_step)
print("METRICS " + json.dumps(metrics), flush=True)
"""
LIMIT = 240
"""Seconds any rank may take: a hang fails the test instead of stalling the suite."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(world: int, mode: str, arg: dict, out: Path) -> list[subprocess.CompletedProcess]:
    """Start ``world`` ranks; wait for all (at most LIMIT seconds); their results by rank."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = os.environ | {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world),
            "IHL_DIST_TIMEOUT": "60",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK, mode, json.dumps(arg), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + LIMIT
    results = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise AssertionError(f"a rank was still running after {LIMIT} s (hang)") from None
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def metrics_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("METRICS "))
    return json.loads(line.removeprefix("METRICS "))


def detected(result: subprocess.CompletedProcess) -> int:
    """How many images the detector saw in this rank."""
    return sum(int(x.split()[1]) for x in result.stdout.splitlines() if x.startswith("DETECTING "))


def test_sharded_evaluation_equals_one_process_exactly(straight_run, tmp_path):
    straight, _ = straight_run
    best = straight / "checkpoints" / "best.pt"
    # one process with the same thread settings as the ranks (OMP_NUM_THREADS=1), since
    # another thread count sums convolutions in another order
    (one,) = run_ranks(1, "evaluate", {"checkpoint": str(best)}, tmp_path / "one")
    single = metrics_of(one)
    results = run_ranks(3, "evaluate", {"checkpoint": str(best)}, tmp_path / "three")
    for result in results:  # as JSON, where NaN (no large persons) equals NaN
        assert json.dumps(metrics_of(result)) == json.dumps(single)
    assert len(json.loads((tmp_path / "one" / "results.json").read_text())) > 2 * 3
    for name in ("metrics.json", "results.json"):
        assert (tmp_path / "three" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_detector_boxes_are_shared_out_and_equal_one_process(straight_run, tmp_path):
    """``--boxes detector`` under torchrun: each rank detects a shard of the images (17 images
    in batches of 8: 8, 8 and 1), and the boxes, box AP and pose metrics are one process's."""
    root = tmp_path / "coco"
    make_coco_synth(root, num_train=1, num_val=17, seed=9)
    torch.manual_seed(0)  # a random detector: its boxes only have to be the same everywhere
    small = DetectorConfig(architecture="fasterrcnn_small", weights=None, min_size=96, max_size=128)
    detector = save_detector(tmp_path / "detector.pt", build_detector(small), small)
    arg = {
        "checkpoint": str(straight_run[0] / "checkpoints" / "best.pt"),
        "boxes": "detector",
        "detector": str(detector),
        "data_root": str(root),
    }
    (one,) = run_ranks(1, "evaluate", arg, tmp_path / "one")
    single = metrics_of(one)
    assert "box_AP" in single and "AP" in single
    found = json.loads((tmp_path / "one" / "detections.json").read_text())
    assert {d["image_id"] for d in found} > {d["image_id"] for d in found[:8]}  # past one batch
    results = run_ranks(3, "evaluate", arg, tmp_path / "three")
    for result in results:
        assert json.dumps(metrics_of(result)) == json.dumps(single)
    assert [detected(r) for r in (one, *results)] == [17, 8, 8, 1]
    for name in ("detections.json", "metrics.json", "results.json"):
        assert (tmp_path / "three" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_two_ranks_train_then_validate_in_shards(tiny_cfg, tmp_path):
    cfg = config.to_dict(tiny_cfg)
    cfg["train"] = cfg["train"] | {"epochs": 1, "val_interval": 1, "batch_size": 4}
    results = run_ranks(2, "train", cfg, tmp_path / "run")
    reported = [json.dumps(metrics_of(r)) for r in results]
    assert reported[0] == reported[1] and "AP" in json.loads(reported[0])
    # the validation the ranks shared is what one process gets from the saved model
    # (in batches of train.batch_size, with rank 0's BatchNorm statistics)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    (again,) = run_ranks(1, "evaluate", {"checkpoint": str(best), "batch": 4}, tmp_path / "eval")
    assert json.dumps(metrics_of(again)) == reported[0]


def test_a_nan_on_one_rank_stops_both_and_names_the_samples(tiny_cfg, tmp_path):
    results = run_ranks(2, "nan", config.to_dict(tiny_cfg), tmp_path / "run")
    for result in results:
        assert result.returncode != 0
        assert "FloatingPointError: loss is not finite at epoch 1, step 2 on rank 1" in (
            result.stderr
        ), result.stderr[-3000:]
        assert "samples annotation id" in result.stderr


def test_a_dead_rank_stops_the_others_instead_of_hanging(tiny_cfg, tmp_path):
    start = time.monotonic()
    results = run_ranks(3, "die", config.to_dict(tiny_cfg), tmp_path / "run")
    assert results[2].returncode == 3
    assert results[0].returncode != 0 and results[1].returncode != 0
    assert time.monotonic() - start < LIMIT


def test_resuming_with_another_world_size_is_refused(straight_run, tiny_cfg, tmp_path):
    straight, _ = straight_run
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    cfg = config.to_dict(tiny_cfg)
    cfg["train"] = cfg["train"] | {"epochs": 3}
    results = run_ranks(2, "resume", cfg, run)
    for result in results:
        assert result.returncode != 0
        assert "written by a run of 1 process(es) and this run has 2" in result.stderr
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before
