"""Fixtures shared by every test folder: the in-process CLI and one S3 endpoint."""

from __future__ import annotations

import pytest
from servers import moto_s3
from typer.testing import CliRunner

from ihl.cli.main import app


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
