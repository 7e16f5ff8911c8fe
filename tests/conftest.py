"""Fixtures shared by every test folder: the in-process CLI, one S3 endpoint, one synthetic
COCO set and one detector trained on it; and the slow tier (docs/development.md).

A test is slow when it is marked ``slow`` in its module, or when it uses one of the
fixtures in ``SLOW_FIXTURES`` (each trains a model or starts a server for its tests).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

# DVC binds its log handlers to sys.stdout when it is first imported. Imported here, that is
# pytest's stream for the whole run; first imported inside a test's capsys or CliRunner, it
# would be a stream that closes with that test, and DVC's next log line in the worker fails.
import dvc  # noqa: F401
import pytest
import torch
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
    """Marks the slow tier, and runs the work units (work_unit) with the most slow tests
    first: the two workers then end together on small units rather than one waiting on
    the other's last big one."""
    for item in items:
        if SLOW_FIXTURES.keys() & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    slow = Counter(work_unit(i.nodeid) for i in items if i.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[work_unit(item.nodeid)])


SHARED = {"tests/serving/": "serving", "tests/detection/": "serving", "tests/stages/": "stages"}
"""Folders whose files share a costly session fixture (TorchServe, the trained detector, the
two-epoch run), and the work unit each belongs to."""


def work_unit(nodeid: str) -> str:
    """What one pytest-xdist worker runs whole: a shared folder's unit, or else a file (whose
    module fixtures are then built once)."""
    unit = next((u for folder, u in SHARED.items() if nodeid.startswith(folder)), None)
    return unit or nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The suite runs in two workers (pyproject.toml's addopts), handed out by work_unit.
    xdist's own ``loadgroup`` would do this from marks, but does not group under pytest 9.2
    (pytest-dev/pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def pytest_configure(config):
    """One thread per worker, for its own torch and the processes it starts: two workers
    share this machine's two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


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
