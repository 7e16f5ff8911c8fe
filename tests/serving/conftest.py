"""A tiny exported model and one real TorchServe serving it (token auth on) per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from serving.torchserve import TorchServe

from ihl import config
from ihl.checkpoint import load_model, save_model
from ihl.edge.export import export_model
from ihl.models import build_model

TINY = {"model.input_size": [64, 64], "model.deconv_channels": 32}
BATCH_SIZE = 4
MAX_BATCH_DELAY_MS = 300
"""Long enough for requests sent together to share a batch on a busy machine."""


@pytest.fixture(scope="session")
def serving_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised sample-preset model (64x64 crops): real weights, seconds to make."""
    torch.manual_seed(0)
    cfg = config.load("sample", TINY)
    return save_model(tmp_path_factory.mktemp("ckpt") / "model.pt", build_model(cfg.model), cfg)


@pytest.fixture(scope="session")
def served_model(serving_checkpoint):
    """The checkpoint's (model, cfg) in this process, to compare the server's answers with."""
    model, cfg = load_model(serving_checkpoint)
    return model.eval(), cfg


@pytest.fixture(scope="session")
def metrics_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "metrics.json"
    path.write_text(json.dumps({"AP": 0.125, "AP50": 0.5}))
    return path


@pytest.fixture(scope="session")
def export_dir(serving_checkpoint, metrics_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ihl-3"
    export_model(
        serving_checkpoint,
        out,
        metrics=metrics_file,
        name="ihl",
        version="3",
        data_version="synth@abc123",
        batch_size=BATCH_SIZE,
        max_batch_delay=MAX_BATCH_DELAY_MS,
    )
    return out


@pytest.fixture(scope="session")
def torchserve(export_dir, tmp_path_factory):
    """TorchServe with serving/config.properties (free ports) serving the exported archive."""
    server = TorchServe(tmp_path_factory.mktemp("torchserve"), export_dir / "model-store")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def detecting(serving_checkpoint):
    """A service whose detector finds six persons in any image: a random FCOS with no score
    threshold and NMS that keeps overlapping boxes."""
    from serving.calls import shipped_limits

    from ihl.config import DetectorConfig
    from ihl.detection.models import build_detector
    from ihl.edge.serving.service import PoseService

    torch.manual_seed(0)
    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=64, max_size=96,
        score_threshold=0.0, nms_iou=1.0, max_persons=6,
    )  # fmt: skip
    model, pose_cfg = load_model(serving_checkpoint)
    return PoseService(
        model.eval(), pose_cfg, shipped_limits() | {"max_boxes": 6, "max_batch_crops": 8},
        header={"keypoint_names": [], "skeleton": []}, model_info={"name": "ihl", "version": "1"},
        detector=(build_detector(cfg).eval(), cfg),
    )  # fmt: skip
