"""Fixtures for the Kubeflow pipeline tests: the CLI runner and a compiled pipeline."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from ihl.cli import app


@pytest.fixture(scope="module")
def cli():
    """Run ``ihl ARGS...`` in-process; returns click's Result."""
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run


def load_pipeline(path) -> tuple[dict, dict]:
    """A compiled pipeline file: (the pipeline spec, its Kubernetes platform spec)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
