"""Fixtures shared by every test folder: the in-process CLI, one S3 endpoint, one synthetic
COCO set and one detector trained on it; and the slow tier (docs/development.md).

A test is slow when it is marked ``slow`` in its module, or when it uses one of the
fixtures in ``SLOW_FIXTURES`` (each trains a model or starts a server for its tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import moto_s3
from typer.testing import CliRunner

from ihl.cli.main import app

SLOW_FIXTURES = {
    "straight_run": "trains the tiny pose model for two epochs (tests/stages)",
    "trained_detector": "trains the tiny detector for two epochs",
    "torchserve": "starts TorchServe (tests/serving)",
    "served": "starts TorchServe with a detector (tests/serving)",
    "expiring": "starts TorchServe (tests/serving)",
    "docs_server": "starts TorchServe (tests/serving)",
    "kserve": "starts TorchServe with the KServe wrapper (tests/serving)",
    "kserve_torchserve": "starts TorchServe (tests/serving)",
    "local_run": "runs the whole Kubeflow pipeline locally (tests/kfp)",
    "heavy_loaded": "imports every module of ihl in a fresh interpreter (tests/test_layout.py)",
}
"""Fixtures that cost tens of seconds: every test using one, directly or through another
fixture, is in the slow tier."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.keys() & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cli():
    """Run ``ihl ARGS...`` in-process; returns click's Result (exit_code, output, stdout)."""
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a moto S3 server that lives for the whole session; tests make
    their own buckets."""
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def coco_synth(tmp_path_factory) -> Path:
    """One synthetic COCO set for the tests that read one: 8 train and 4 val images of
    160x120, 1-4 people each. Read only: a test that changes it copies it first."""
    from ihl.data.synth import make_coco_synth

    root = tmp_path_factory.mktemp("synth") / "coco"
    make_coco_synth(root, 8, 4, image_size=(160, 120), seed=3)
    return root


@pytest.fixture(scope="session")
def trained_detector(coco_synth, tmp_path_factory):
    """(model, config, file) of the tiny detector trained for two epochs on ``coco_synth``:
    a working model, not a good one. Its file keeps a low score threshold, so that serving
    it finds people."""
    from ihl.config import DetectorConfig
    from ihl.detection.train import train_detector

    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=96, max_size=128, epochs=2,
        batch_size=8, score_threshold=0.05, max_persons=6,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    model = train_detector(cfg, coco_synth, path, log=lambda _: None)
    return model, cfg, path
