"""GPU requests every KFP backend honours, and pod sizes that scale with the GPU count."""

from __future__ import annotations

import pytest
import yaml
from conftest import load_pipeline

from ihl.weights import WEIGHTS_ENV
from pipelines.pytorchjob import pytorchjob_manifest
from pipelines.settings import ClusterSettings
from pipelines.training import check_arguments, compile_pipeline, compiled_gpus


@pytest.fixture(scope="module")
def four_gpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("scaling") / "ihl-pipeline.yaml"
    compile_pipeline(path, ClusterSettings(num_gpus=4))
    return path


def container(spec: dict, task: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def test_train_gpu_request_is_a_literal_count(four_gpus):
    spec, _ = load_pipeline(four_gpus)
    accelerator = container(spec, "train")["resources"]["accelerator"]
    # ``count`` is the field backends before run-time resource resolution read
    assert accelerator["count"] == "4" and accelerator["resourceCount"] == "4"
    assert container(spec, "evaluate")["resources"]["accelerator"]["count"] == "1"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["num_gpus"]["defaultValue"] == 4
    assert compiled_gpus(four_gpus) == 4


def test_cpu_memory_and_shm_scale_with_the_gpus(four_gpus):
    spec, k8s = load_pipeline(four_gpus)
    train = container(spec, "train")["resources"]
    assert (train["resourceCpuRequest"], train["resourceCpuLimit"]) == ("40", "80")
    assert (train["resourceMemoryRequest"], train["resourceMemoryLimit"]) == ("128Gi", "256Gi")
    evaluate = container(spec, "evaluate")["resources"]
    assert (evaluate["resourceCpuRequest"], evaluate["resourceMemoryRequest"]) == ("10", "32Gi")
    assert k8s["exec-train"]["emptyDirMounts"][0]["sizeLimit"] == "32Gi"
    assert k8s["exec-evaluate"]["emptyDirMounts"][0]["sizeLimit"] == "8Gi"
    prepare = container(spec, "prepare")["resources"]
    assert (prepare["resourceCpuRequest"], prepare["resourceMemoryRequest"]) == ("4", "8Gi")
    for task in ("train", "evaluate"):
        assert {"name": WEIGHTS_ENV, "value": "/data/weights"} in container(spec, task)["env"]


def test_sizes_given_outright_are_kept():
    sizes = ClusterSettings(cpu_request="6", shm_size="2Gi").resources(8)
    assert (sizes.cpu_request, sizes.cpu_limit, sizes.shm_size) == ("6", "160", "2Gi")
    assert ClusterSettings().resources(0) == ClusterSettings().resources(1)


def test_another_gpu_count_is_refused_at_submit():
    assert check_arguments({}, compiled_gpus=4)["num_gpus"] == 4
    assert check_arguments({"num_gpus": 4}, compiled_gpus=4)["num_gpus"] == 4
    with pytest.raises(ValueError, match="compiled to request 4 GPU.*--gpus 2"):
        check_arguments({"num_gpus": 2}, compiled_gpus=4)


def job(**kwargs) -> dict:
    manifest = pytorchjob_manifest(
        "r50", image="img", nodes=2, gpus_per_node=8, preset="coco_res50", data_path="coco",
        **kwargs,
    )  # fmt: skip
    text = yaml.safe_dump(manifest, sort_keys=False)
    assert "&" not in text
    return yaml.safe_load(text)


def pods(manifest: dict) -> list[dict]:
    return [r["template"]["spec"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()]


def test_pytorchjob_rendezvous_restarts_and_explicit_cuda():
    for pod in pods(job(max_restarts=5)):
        (c,) = pod["containers"]
        command = c["command"]
        assert "--rdzv-backend=c10d" in command
        assert "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)" in command
        assert "--max-restarts=5" in command and "--rdzv-id=r50" in command
        assert not any(arg.startswith("--node-rank") for arg in command)
        assert command[command.index("--device") + 1] == "cuda"
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
        assert env[WEIGHTS_ENV] == "/data/weights"


def test_pytorchjob_sizes_per_gpu_and_optional_rdma():
    for pod in pods(job()):
        (c,) = pod["containers"]
        assert c["resources"]["requests"] == {
            "cpu": "80", "memory": "256Gi", "nvidia.com/gpu": "8"
        }  # fmt: skip
        assert c["resources"]["limits"]["memory"] == "512Gi"
        assert "add" not in c["securityContext"]["capabilities"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["sizeLimit"] == "64Gi"
    for pod in pods(job(rdma_resource="rdma/ib", nccl_env={"NCCL_SOCKET_IFNAME": "eth0"})):
        (c,) = pod["containers"]
        assert c["resources"]["limits"]["rdma/ib"] == "1"
        # IPC_LOCK would never reach the non-root process: nothing is added.
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"} in c["env"]


def test_cli_compiles_for_a_gpu_count_and_submit_refuses_another(cli, tmp_path):
    package = tmp_path / "p.yaml"
    result = cli("pipeline", "compile", "-o", package, "--gpus", "2", "--cpu", "7")
    assert result.exit_code == 0, result.output
    spec, _ = load_pipeline(package)
    train = container(spec, "train")["resources"]
    assert train["accelerator"]["count"] == "2" and train["resourceCpuRequest"] == "7"
    assert train["resourceMemoryRequest"] == "64Gi"
    refused = cli(
        "pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", package, "--gpus", "4"
    )
    assert refused.exit_code != 0
    assert "compiled to request 2 GPU(s)" in refused.output and "--gpus 4" in refused.output


def test_cli_pytorchjob_restarts_rdma_and_nccl(cli):
    result = cli(
        "pipeline", "pytorchjob", "--name", "j", "--data-path", "coco", "--nodes", "2",
        "--gpus-per-node", "4", "--max-restarts", "1", "--rdma-resource", "rdma/ib",
        "--nccl", "NCCL_SOCKET_IFNAME=eth0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for pod in pods(yaml.safe_load(result.output)):
        (c,) = pod["containers"]
        assert "--max-restarts=1" in c["command"]
        assert c["resources"]["requests"]["rdma/ib"] == "1"
        assert c["resources"]["requests"]["cpu"] == "40"
        assert {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"} in c["env"]
    bad = cli("pipeline", "pytorchjob", "--name", "j", "--data-path", "c", "--nccl", "NCCL_X")
    assert bad.exit_code != 0 and "--nccl 'NCCL_X'" in bad.output
