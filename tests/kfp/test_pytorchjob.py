"""The multi-node PyTorchJob manifest: parsed back and checked field by field."""

from __future__ import annotations

import yaml

from ihl.edge.container_images import image


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
        assert command[:8] == [
            "torchrun", "--nnodes=3", "--nproc-per-node=4", "--node-rank=$(RANK)",
            "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)", "--no-python", "ihl",
        ]  # fmt: skip
        rest = command[8:]
        assert rest[:6] == ["train", "-c", "coco_res50", "-o", "/data/runs/r50-coco", "--resume"]
        sets = [rest[i + 1] for i, arg in enumerate(rest) if arg == "--set"]
        assert sets == ["data.root=/data/coco", "model.input_size=[192, 256]", "train.amp=bf16"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"data": "/data", "dshm": "/dev/shm"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "ihl-data"}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
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
