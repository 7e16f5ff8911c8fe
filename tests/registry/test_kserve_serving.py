"""A registry version served the way the InferenceService's pod runs it: KServe's own storage
code downloads the manifest's storageUri, then TorchServe starts with the manifest's command
line and TS_* environment, and answers the KServe v1 protocol."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kserve_initializer import kserve_download
from sample_data import REAL_IMAGES
from servers import free_port
from serving.torchserve import TorchServe

from ihl.edge.registry.kserve import kserve_manifest
from ihl.edge.registry.store import promote, push


class KServeContainer(TorchServe):
    """TorchServe as an InferenceService's container runs it: the manifest's command line
    (so the pulled version's own config.properties) and TS_* environment, on a pulled
    registry version in place of /mnt/models. Only the ports differ from the pod's: free
    loopback ones, set through the same environment variables."""

    def __init__(self, workdir: Path, models: Path, manifest: dict):
        config = models / "config" / "config.properties"
        super().__init__(workdir, models / "model-store", config=config)
        container = manifest["spec"]["predictor"]["model"]
        self.pod_command = [a.replace("/mnt/models", str(models)) for a in container["args"]]
        self.pod_command[0] = str(Path(sys.executable).parent / self.pod_command[0])
        local = {
            "TS_INFERENCE_ADDRESS": self.inference_url,
            "TS_MANAGEMENT_ADDRESS": self.management_url,
            "TS_METRICS_ADDRESS": self.metrics_url,
        }
        self.pod_env = {e["name"]: local.get(e["name"], e["value"]) for e in container["env"]}
        self.pod_env["TS_GRPC_INFERENCE_PORT"] = str(free_port())
        self.pod_env["TS_GRPC_MANAGEMENT_PORT"] = str(free_port())

    def _command(self, *args: str) -> list[str]:
        return self.pod_command if "--start" in args else super()._command(*args)

    def _env(self) -> dict[str, str]:
        return super()._env() | self.pod_env


@pytest.mark.slow
def test_a_registry_version_serves_as_the_inference_service_runs_it(bucket, real_export, tmp_path):
    uri = f"s3://{bucket}/models"
    push(real_export, uri, "ihl", "1")
    promote(uri, "ihl", "1")
    manifest = kserve_manifest(uri, "ihl", "production")
    storage_uri = manifest["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri == f"s3://{bucket}/models/ihl/1/"
    models = kserve_download(storage_uri, tmp_path / "mnt-models")

    server = KServeContainer(tmp_path / "pod", models, manifest).start()
    try:
        photo = base64.b64encode((REAL_IMAGES / "000000000872.jpg").read_bytes()).decode()
        body = {"instances": [{"image": photo, "boxes": [[40, 20, 200, 300]]}]}
        request = urllib.request.Request(
            f"{server.inference_url}/v1/models/ihl:predict",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as err:
            pytest.fail(f"v1 predict failed: {err.code} {err.read()!r}\n{server.log_tail()}")
        [prediction] = answer["predictions"]
        [person] = prediction["persons"]
        assert len(person["keypoints"]) == 17
        assert prediction["model"] == {"name": "ihl", "version": "1"}
    finally:
        server.stop()
