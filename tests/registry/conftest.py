"""Registry test fixtures: S3 credentials in the environment, fresh buckets, export folders."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from servers import free_port


@pytest.fixture
def dead_endpoint() -> str:
    """An endpoint URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint in the environment only, as a user would set them."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3_server


@pytest.fixture
def s3(s3_env):
    return boto3.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket for one test."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_export(tmp_path):
    """Build folders in the export layout (contract of ihl.edge.export.export_model), real files.

    The archive is a real zip with TorchServe's MAR-INF/MANIFEST.json; ``payload``
    makes two exports differ.
    """

    def make(folder: str, name: str = "ihl", version: str = "1", payload: bytes = b"") -> Path:
        return _write_export(tmp_path / folder, name, version, payload)

    return make


def _write_export(root: Path, name: str, version: str, payload: bytes) -> Path:
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    with zipfile.ZipFile(root / "model-store" / f"{name}.mar", "w") as mar:
        manifest = {"model": {"modelName": name, "modelVersion": version, "handler": "h.py"}}
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        mar.writestr("model.pt", b"\x00weights" * 5000 + payload)
    (root / "config" / "config.properties").write_text("inference_address=http://0.0.0.0:8085\n")
    (root / "model_card.md").write_text(f"# {name} {version}\n\nAP 0.5{payload.hex()}\n")
    return root


@pytest.fixture(scope="session")
def real_export(tmp_path_factory) -> Path:
    """`ihl export` of a small randomly initialised model: a real archive TorchServe loads."""
    from ihl import config
    from ihl.checkpoint import save_model
    from ihl.edge.export import export_model
    from ihl.models import build_model

    root = tmp_path_factory.mktemp("real-export")
    cfg = config.load("sample", {"model.input_size": [64, 64], "model.deconv_channels": 32})
    checkpoint = save_model(root / "model.pt", build_model(cfg.model), cfg)
    export_model(checkpoint, root / "export", name="ihl", version="1")
    return root / "export"
