"""A tiny synthetic COCO set and a model small enough to train on it in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ihl import config
from ihl.data.synth import make_coco_synth
from ihl.edge.live import LiveLog
from ihl.train import train

TINY = {
    "model.backbone": "resnet18",
    "model.input_size": [64, 64],
    "model.deconv_channels": 32,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.num_workers": 0,
    "train.val_interval": 2,
    "train.warmup_iters": 4,
    "train.lr_steps": [1],
    "train.checkpoint_interval_iters": 3,
}


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "coco"
    make_coco_synth(root, num_train=25, num_val=3, seed=5)  # 40 persons with keypoints: 5 steps
    return root


@pytest.fixture
def tiny_cfg(tiny_coco) -> config.Config:
    return config.load("sample", TINY | {"data.root": str(tiny_coco)})


@pytest.fixture(scope="session")
def straight_run(tiny_coco, tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """One uninterrupted tiny run: (its folder, the metrics train returned)."""
    out = tmp_path_factory.mktemp("straight")
    cfg = config.load("sample", TINY | {"data.root": str(tiny_coco)})
    return out, train(cfg, out, progress=False, epoch_log=LiveLog(out / "live"))
