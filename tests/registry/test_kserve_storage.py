"""KServe's own storage initializer code (the kserve-storage package's Storage.download) on
the storageUri of an InferenceService that `ihl registry manifest` writes, against moto's S3
server: version 1 comes down alone while 10, 1.x and 1-rc exist, and the serve image's
entrypoint (serving/verify_models.py) starts on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kserve_initializer import kserve_download

from ihl.edge.registry import store as registry
from ihl.edge.registry.kserve import kserve_manifest

REPO = Path(__file__).resolve().parents[2]


def test_kserve_downloads_version_1_alone_and_the_serve_image_starts_on_it(
    s3_env, bucket, make_export, tmp_path
):
    uri = f"s3://{bucket}/models"
    for version in ("1", "10", "1.x", "1-rc"):
        export = make_export(f"v{version}", version=version, payload=version.encode())
        registry.push(export, uri, "ihl", version)
    model = kserve_manifest(uri, "ihl", "1")["spec"]["predictor"]["model"]
    mounted = kserve_download(model["storageUri"], tmp_path / "mnt-models")

    found = sorted(p.relative_to(mounted).as_posix() for p in mounted.rglob("*") if p.is_file())
    assert found == [
        ".push-claim.json",
        "config/config.properties",
        "manifest.json",
        "model-store/ihl.mar",
        "model_card.md",
    ]
    assert (mounted / "model_card.md").read_bytes() == (
        tmp_path / "v1" / "model_card.md"
    ).read_bytes()

    args = [a.replace("/mnt/models", str(mounted)) for a in model["args"]]
    server = [sys.executable, "-c", "print('torchserve started')"]
    store_arg = [a for a in args if a.startswith("--model-store=")]
    digest = {e["name"]: e["value"] for e in model["env"]}["IHL_MANIFEST_SHA256"]
    entry = subprocess.run(
        [sys.executable, str(REPO / "serving" / "verify_models.py"), *server, *store_arg],
        env=os.environ | {"IHL_MANIFEST_SHA256": digest}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert entry.returncode == 0, entry.stderr
    assert "verified 3 model files" in entry.stdout
    assert "torchserve started" in entry.stdout
