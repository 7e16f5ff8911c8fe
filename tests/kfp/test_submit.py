"""`ihl pipeline submit` through the real kfp.Client against a small stand-in for the Kubeflow
Pipelines REST API (v2beta1) that records what it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from servers import free_port


class _KfpApi(BaseHTTPRequestHandler):
    """Answers the calls kfp.Client makes to start a run; keeps the request bodies."""

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.calls.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        else:
            self.send_error(404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path == "/apis/v2beta1/runs":
            self._reply({"run_id": "run-1", "display_name": body["display_name"]})
        else:
            self.send_error(404)

    def log_message(self, *args):
        """Quiet."""


@pytest.fixture
def kfp_api():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _KfpApi)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _run_body(server) -> dict:
    (body,) = [
        b for method, path, b in server.calls if (method, path) == ("POST", "/apis/v2beta1/runs")
    ]
    return body


def test_submit_sends_the_pipeline_and_its_parameters(cli, kfp_api):
    host = f"http://127.0.0.1:{kfp_api.server_port}"
    result = cli(
        "pipeline", "submit", "--host", host, "--experiment", "pose", "--run-name", "r50-a",
        "--dataset", "coco", "--data-path", "coco", "--preset", "coco_res50", "--epochs", "3",
        "--gpus", "4", "--set", "train.amp=bf16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "submitted run run-1 (caching off)" in result.output
    assert f"{host}/#/runs/details/run-1" in result.output
    experiment = [b for m, p, b in kfp_api.calls if (m, p) == ("POST", "/apis/v2beta1/experiments")]
    assert experiment[0]["display_name"] == "pose"
    run = _run_body(kfp_api)
    assert run["display_name"] == "r50-a" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "dataset": "coco", "data_path": "coco", "preset": "coco_res50", "epochs": 3,
        "num_gpus": 4, "overrides": {"train.amp": "bf16"},
    }  # fmt: skip
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "ihl-train"
    tasks = spec["root"]["dag"]["tasks"]
    assert not any(task["cachingOptions"].get("enableCache") for task in tasks.values())
    k8s = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "exec-train" in k8s["deploymentSpec"]["executors"]
    # compiled for the run's GPU count: a literal request every backend honours
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["accelerator"]["count"] == "4" and train["resourceCpuRequest"] == "40"


def test_submit_a_compiled_package_with_caching_on_a_pinned_image(cli, kfp_api, tmp_path):
    package = tmp_path / "p.yaml"
    assert cli("pipeline", "compile", "-o", package, "--shm-size", "2Gi").exit_code == 0
    pinned = "registry.example/ihl@sha256:" + "1" * 64
    host = f"http://127.0.0.1:{kfp_api.server_port}"
    result = cli(
        "pipeline", "submit", "--host", host, "--package", package, "--image", pinned, "--cache"
    )
    assert result.exit_code == 0, result.output
    assert "(caching on)" in result.output
    run = _run_body(kfp_api)
    assert run["runtime_config"]["parameters"] == {"image": pinned}
    k8s = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    shm = k8s["deploymentSpec"]["executors"]["exec-train"]["emptyDirMounts"][0]
    assert shm["sizeLimit"] == "2Gi"
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks["train"]["cachingOptions"]["enableCache"] is True


def test_caching_is_refused_for_an_image_tag(cli, kfp_api):
    host = f"http://127.0.0.1:{kfp_api.server_port}"
    result = cli("pipeline", "submit", "--host", host, "--image", "reg.example/ihl:1", "--cache")
    assert result.exit_code == 2 and "pinned by digest" in result.output
    assert kfp_api.calls == []


def test_unreachable_host_is_one_clear_error(cli):
    host = f"http://127.0.0.1:{free_port()}"
    result = cli("pipeline", "submit", "--host", host)
    assert result.exit_code == 2
    assert f"cannot reach Kubeflow Pipelines at {host}" in result.output
    assert "Traceback" not in result.output


def test_bad_parameters_are_refused_before_contacting_the_host(cli, kfp_api, tmp_path):
    host = f"http://127.0.0.1:{kfp_api.server_port}"
    result = cli("pipeline", "submit", "--host", host, "--dataset", "imagenet")
    assert result.exit_code == 2 and "unknown dataset 'imagenet'" in result.output
    result = cli("pipeline", "submit", "--host", host, "--package", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "pipeline package not found" in result.output
    assert kfp_api.calls == []
