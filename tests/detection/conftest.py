"""A tiny synthetic set and a detector trained on it for seconds, shared by the detection
tests (a working model, not a good one)."""

from __future__ import annotations

import pytest

from ihl.config import DetectorConfig
from ihl.data.synth import make_coco_synth
from ihl.detection.train import train_detector

TINY = {"architecture": "fcos_small", "weights": None, "min_size": 96, "max_size": 128}


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "coco"
    make_coco_synth(root, 16, 6, image_size=(128, 96), seed=3)
    return root


@pytest.fixture(scope="session")
def trained(synth, tmp_path_factory):
    """(model, config, file) of a detector trained for two epochs."""
    cfg = DetectorConfig(**TINY, epochs=2, batch_size=8)
    path = tmp_path_factory.mktemp("det") / "detector.pt"
    model = train_detector(cfg, synth, path, log=lambda _: None)
    return model, cfg, path
