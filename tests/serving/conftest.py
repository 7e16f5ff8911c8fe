"""A tiny exported model with a person detector, and the session's two real TorchServes
serving it: ``torchserve`` with serving/config.properties (token auth on), ``kserve`` with
the export's own KServe config (protocol v1). Every serving test that needs a server uses
these two; only tests of other settings start their own.

The detector is randomly initialised with no score threshold, so that it finds
``PERSONS`` persons in any photo in no time: tests check that answers carry its boxes and
scores (``served_detector`` runs it here), not that they are right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from serving.calls import shipped_limits
from serving.torchserve import TorchServe

from ihl import config
from ihl.checkpoint import load_model, save_model
from ihl.config import DetectorConfig
from ihl.detection.models import build_detector, load_detector, save_detector
from ihl.edge.export import export_model
from ihl.edge.serving.service import PoseService
from ihl.models import build_model

TINY = {"model.input_size": [64, 64], "model.deconv_channels": 32}
BATCH_SIZE = 4
MAX_BATCH_DELAY_MS = 300
"""Long enough for requests sent together to share a batch on a busy machine."""
PERSONS = 2


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of work; deselect with -m 'not slow'")


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
def detector_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=96, max_size=128,
        score_threshold=0.0, max_persons=PERSONS,
    )  # fmt: skip
    return save_detector(
        tmp_path_factory.mktemp("detector") / "detector.pt", build_detector(cfg), cfg
    )


@pytest.fixture(scope="session")
def served_detector(detector_file):
    """The archive's detector (model, cfg) in this process."""
    model, cfg = load_detector(detector_file)
    return model.eval(), cfg


@pytest.fixture(scope="session")
def detector_export(serving_checkpoint, detector_file, metrics_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detector-export") / "ihl-3"
    export_model(
        serving_checkpoint, out, metrics=metrics_file, name="ihl", version="3",
        detector=detector_file, batch_size=BATCH_SIZE, max_batch_delay=MAX_BATCH_DELAY_MS,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def torchserve(detector_export, tmp_path_factory):
    """TorchServe with serving/config.properties (free ports) serving the detector export."""
    server = TorchServe(tmp_path_factory.mktemp("torchserve"), detector_export / "model-store")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kserve(detector_export, tmp_path_factory):
    """As in the InferenceService pod (the export's config/config.properties), with this model
    store and free ports."""
    server = TorchServe(
        tmp_path_factory.mktemp("kserve"),
        detector_export / "model-store",
        config=detector_export / "config" / "config.properties",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def detecting(serving_checkpoint):
    """A service whose detector finds six persons in the tests' images: a random FCOS (seed 5,
    whose first six boxes lie inside them) with no score threshold and NMS that keeps
    overlapping boxes."""
    torch.manual_seed(5)
    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=64, max_size=96,
        score_threshold=0.0, nms_iou=1.0, max_persons=6,
    )  # fmt: skip
    detector = build_detector(cfg).eval()  # before the pose model, whose init draws too
    model, pose_cfg = load_model(serving_checkpoint)
    return PoseService(
        model.eval(), pose_cfg, shipped_limits() | {"max_boxes": 6, "max_batch_crops": 8},
        header={"keypoint_names": [], "skeleton": []}, model_info={"name": "ihl", "version": "1"},
        detector=(detector, cfg),
    )  # fmt: skip
