"""Every script in benchmarks/ runs to its table at tiny sizes (slow tier).

Nothing else runs the benchmarks, so a change in the library can break one silently; each
test runs a script as a user would, in its own process, and fails when it exits non-zero
or prints no table. The figures themselves are never asserted. benchmarks/gpu.py and
gpu.sh have their own smoke test (they need the GPU image's pieces).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ihl import config
from ihl.checkpoint import save_model
from ihl.config import DetectorConfig
from ihl.data.synth import make_coco_synth
from ihl.detection.train import train_detector
from ihl.models import build_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "benchmarks"


def run_script(name: str, *args, cwd: Path, timeout: int = 600) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_coco_synth(root, 8, 4, image_size=(160, 120))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = config.load("sample")
    return save_model(tmp_path_factory.mktemp("ckpt") / "sample.pt", build_model(cfg.model), cfg)


@pytest.fixture(scope="module")
def detector(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detector") / "detector.pt"
    cfg = DetectorConfig(architecture="fcos_small", weights=None, epochs=1, min_size=96)
    train_detector(cfg, synth, out, log=lambda _: None)
    return out


def test_every_script_has_a_smoke_run():
    """A new benchmark script gets its smoke test here (gpu.* are tested beside the image)."""
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    scripts = {p.stem for p in SCRIPTS.glob("*.py")} - {"gpu"}
    assert scripts <= tested, f"no smoke run for {sorted(scripts - tested)}"


def test_loss_speed(tmp_path):
    out = run_script("loss_speed.py", "--batch", 2, "--iters", 1, "--rounds", 1, cwd=tmp_path)
    assert "ours, Sinkhorn" in out and "ours, exact W1" in out


def test_wasserstein_forms(tmp_path):
    out = run_script("wasserstein_forms.py", "--batch", 2, "--seeds", 1, cwd=tmp_path)
    assert "sinkhorn" in out.lower()


def test_data(tmp_path):
    out = run_script("data.py", "--seconds", 0.2, cwd=tmp_path)
    assert "cores" in out


def test_train(tmp_path):
    variant = "train.batch_size=2; model.input_size=[32, 64]"
    out = run_script("train.py", "--steps", 1, "--cpu-only", "--variant", variant, cwd=tmp_path)
    assert "img/s" in out
    assert re.search(r"32x64\s+2\s", out)  # the variant's row, its overrides read as YAML


def test_crop_rate(tmp_path):
    out = run_script(
        "crop_rate.py", "--presets", "sample", "--crops", 2, "--threads", 1, cwd=tmp_path
    )
    assert "sample" in out


def test_inference(tmp_path):
    out = run_script(
        "inference.py", "--presets", "sample", "--batches", 1, "--rounds", 1, "--seconds", 0.05,
        cwd=tmp_path,
    )  # fmt: skip
    assert "sample" in out


def test_heads(tmp_path, synth):
    out = run_script("heads.py", "--data", synth, "--out", tmp_path / "heads", "--epochs", 1,
                     cwd=tmp_path)  # fmt: skip
    assert "integral" in out and "heatmap" in out


def test_detector(tmp_path, synth, detector):
    out = run_script(
        "detector.py", "--data", synth, "--epochs", 1, "--size", 96, "--skip-coco",
        "--small", "fcos_small", cwd=tmp_path,
    )  # fmt: skip
    assert "| fcos_small | 96 | 1 |" in out
    out = run_script(
        "detector.py", "--runtimes", "--detector", detector, "--data", synth, "--coco",
        "--images", 2, "--rounds", 1, cwd=tmp_path,
    )  # fmt: skip
    assert "onnx" in out.lower()


def test_detected_pose(tmp_path, synth, checkpoint, detector):
    out = run_script("detected_pose.py", checkpoint, detector, "--data", synth, cwd=tmp_path)
    assert "pose AP, our detector, torch" in out and "matched with OKS" in out


def test_serving(tmp_path, checkpoint, detector):
    out = run_script(
        "serving.py", "--checkpoint", checkpoint, "--detector", detector, "--requests", 2,
        "--clients", 1, cwd=tmp_path,
    )  # fmt: skip
    assert "HTTP and TorchServe" in out and "worker restarts: 0" in out
