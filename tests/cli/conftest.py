"""Shared fixtures for the command-line tests: a CLI runner and the real sample data."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ihl.cli import app


@pytest.fixture
def cli():
    """Run ``ihl ARGS...`` in-process; returns click's Result (exit_code, output, stdout)."""
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run


@pytest.fixture(scope="module")
def coco_synth(tmp_path_factory) -> Path:
    from ihl.data.synth import make_coco_synth

    root = tmp_path_factory.mktemp("synth") / "coco"
    make_coco_synth(root, 2, 2, image_size=(160, 120))
    return root
