"""A moto S3 server on 127.0.0.1 for the DVC remote tests."""

from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer
from project_copy import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free 127.0.0.1 port, for this module's tests."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
