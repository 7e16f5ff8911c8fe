"""The multi-node PyTorchJob manifest: parsed back and checked field by field."""

from __future__ import annotations

import pytest
import yaml
from kube_schema import as_kubernetes_reads_it

from ihl.device import loader_workers
from ihl.edge.container_images import IMAGE_UID, image
from pipelines.pytorchjob import pytorchjob_manifest
from pipelines.settings import ClusterSettings


def test_manifest_for_two_nodes(cli, tmp_path):
    out = tmp_path / "job.yaml"
    result = cli(
        "pipeline", "pytorchjob", "--name", "r50-coco", "--data-path", "coco", "--nodes", "3",
        "--gpus-per-node", "4", "--preset", "coco_res50", "--set", "model.input_size=[192, 256]",
        "--set", "train.amp=bf16", "--namespace", "team", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(out.read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["metadata"] == {"name": "r50-coco", "namespace": "team"}
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for spec in specs.values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["image"] == image("train")
        command = container["command"]
        assert command[:9] == [
            "torchrun", "--nnodes=3", "--nproc-per-node=4", "--rdzv-backend=c10d",
            "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)", "--rdzv-id=r50-coco",
            "--max-restarts=3", "--no-python", "ihl",
        ]  # fmt: skip
        rest = command[9:]
        assert rest[:8] == [
            "train", "-c", "coco_res50", "-o", "/data/runs/r50-coco", "--resume", "--device", "cuda"
        ]  # fmt: skip
        sets = [rest[i + 1] for i, arg in enumerate(rest) if arg == "--set"]
        assert sets == ["data.root=/data/coco", "model.input_size=[192, 256]", "train.amp=bf16"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"data": "/data", "dshm": "/dev/shm", "tmp": "/tmp", "home": "/home/ihl"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "ihl-data"}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        # The GPU request places the pod; no label that only some clusters carry.
        assert "nodeSelector" not in pod
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "&" not in out.read_text()  # no YAML anchors: every replica spelled out


def test_one_node_has_no_workers_and_the_overrides_parse_back(cli):
    from ihl import config

    result = cli(
        "pipeline", "pytorchjob", "--name", "s", "--data-path", "synth", "--nodes", "1",
        "--gpus-per-node", "2", "--preset", "sample", "--set", "model.input_size=[64, 64]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(result.output)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"
    ]
    sets = dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "--set")
    cfg = config.load("sample", {key: yaml.safe_load(value) for key, value in sets.items()})
    assert list(cfg.model.input_size) == [64, 64] and cfg.data.root == "/data/synth"


def test_unknown_preset_is_refused(cli, tmp_path):
    out = tmp_path / "job.yaml"
    result = cli(
        "pipeline",
        "pytorchjob",
        "--name",
        "x",
        "--data-path",
        "coco",
        "--preset",
        "nope",
        "-o",
        out,
    )
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output
    assert not out.exists()


def job_pods(**kwargs) -> list[dict]:
    job = pytorchjob_manifest(
        "r50", image="img", nodes=2, gpus_per_node=4, preset="sample", data_path="coco", **kwargs
    )
    return [spec["template"] for spec in job["spec"]["pytorchReplicaSpecs"].values()]


@pytest.mark.parametrize("rdma", [None, "rdma/ib"])
def test_pods_run_as_the_image_user_with_nothing_more(rdma):
    for template in job_pods(rdma_resource=rdma):
        pod = template["spec"]
        # The image's uid owns what it writes on the shared volume through the pod's group.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID
        assert pod["securityContext"]["fsGroup"] == IMAGE_UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        # No IPC_LOCK: an added capability never reaches a non-root process.
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        }
        # Under the read-only root, only emptyDirs and the data volume are writable.
        writable = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/home/ihl", "/data", "/dev/shm"} == writable


def test_pods_are_valid_kubernetes_pod_templates():
    """What the Training Operator v1 puts in each replica: a core/v1 PodTemplateSpec."""
    for template in job_pods(rdma_resource="rdma/ib"):
        assert as_kubernetes_reads_it(template, "V1PodTemplateSpec") == template


def test_node_selector_is_an_option(cli):
    cluster = ClusterSettings(node_selector={"nvidia.com/gpu.present": "true"})
    for template in job_pods(cluster=cluster):
        assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    result = cli(
        "pipeline", "pytorchjob", "--name", "s", "--data-path", "synth",
        "--node-selector", "pool=a100", "--node-selector", "zone=b",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for spec in yaml.safe_load(result.output)["spec"]["pytorchReplicaSpecs"].values():
        assert spec["template"]["spec"]["nodeSelector"] == {"pool": "a100", "zone": "b"}


def test_loader_workers_follow_the_cpu_request_not_the_limit(monkeypatch):
    """10 CPUs per GPU requested, 20 the limit: 4 ranks share the 40 guaranteed cores."""
    (template, _) = job_pods()
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["resources"]["requests"]["cpu"] == "40"
    assert container["resources"]["limits"]["cpu"] == "80"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(96)), raising=False)
    monkeypatch.setattr("ihl.device.cgroup_cpu_limit", lambda root: 80.0)
    assert loader_workers(4) == 40 // 4 - 1
