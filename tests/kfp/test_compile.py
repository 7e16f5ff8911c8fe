"""The compiled cluster pipeline: tasks, GPU and resource requests, placement, volumes, images."""

from __future__ import annotations

import pytest
from conftest import load_pipeline

from ihl.edge.container_images import image

TASKS = ("prepare", "train", "evaluate", "detector", "export", "register")
IMAGE_PARAM = "{{$.inputs.parameters['pipelinechannel--image']}}"


@pytest.fixture(scope="module")
def compiled(cli, tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "sub" / "ihl-pipeline.yaml"
    result = cli("pipeline", "compile", "-o", path)
    assert result.exit_code == 0, result.output
    return load_pipeline(path)


def test_tasks_in_order(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(TASKS)
    assert tasks["train"]["dependentTasks"] == ["prepare"]
    assert set(tasks["evaluate"]["dependentTasks"]) == {"prepare", "train"}
    assert tasks["register"]["dependentTasks"] == ["export"]
    assert tasks["detector"]["dependentTasks"] == ["prepare"]
    assert set(tasks["export"]["dependentTasks"]) == {"prepare", "train", "evaluate", "detector"}


def test_parameters_and_defaults(compiled):
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("dataset", "preset", "epochs", "num_gpus", "image", "data_source", "data_path"):
        assert name in params
    assert {"dvc_repo", "dvc_rev", "data_pvc", "overrides", "registry_uri"} <= set(params)
    assert params["image"]["defaultValue"] == image("train")
    assert params["dataset"]["defaultValue"] == "synth"
    assert params["num_gpus"]["parameterType"] == "NUMBER_INTEGER"
    assert params["overrides"]["parameterType"] == "STRUCT"


def test_one_definition_makes_the_signature_and_the_options(compiled):
    """pipelines/parameters.py is the one place a run parameter is written: the compiled
    signature, the defaults check_arguments fills in and the submit and run-local options
    all come from it."""
    from typer.main import get_command

    from ihl.cli.pipeline import app
    from pipelines.parameters import PARAMETERS
    from pipelines.training import check_arguments

    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {p.name for p in PARAMETERS} | {"image"}
    for p in PARAMETERS:
        if p.name != "num_gpus":
            assert params[p.name].get("defaultValue", {}) == p.default, p.name
    assert check_arguments({}) == {p.name: p.default for p in PARAMETERS}
    commands = get_command(app).commands
    flags = {
        name: {o for param in commands[name].params for o in param.opts}
        for name in ("submit", "run-local")
    }
    assert {p.flag for p in PARAMETERS} <= flags["submit"]
    assert {p.flag for p in PARAMETERS if p.name != "data_pvc"} <= flags["run-local"]


def test_every_task_runs_the_image_parameter_without_pip(compiled):
    spec, _ = compiled
    for name in TASKS:
        container = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]
        assert container["image"] == IMAGE_PARAM
        assert "pip install" not in " ".join(container["command"])
        task = spec["root"]["dag"]["tasks"][name]
        # the image reference is an input, so a new image is a new cache key
        assert task["inputs"]["parameters"]["image"] == {"componentInputParameter": "image"}


def test_train_requests_gpus_cpu_memory_and_retries(compiled):
    spec, _ = compiled
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    # a literal count (compiled for one GPU by default), which every KFP backend honours
    assert resources["accelerator"]["resourceCount"] == resources["accelerator"]["count"] == "1"
    assert resources["resourceCpuRequest"] == "10" and resources["resourceCpuLimit"] == "20"
    assert resources["resourceMemoryRequest"] == "32Gi"
    assert resources["resourceMemoryLimit"] == "64Gi"
    retry = spec["root"]["dag"]["tasks"]["train"]["retryPolicy"]
    assert retry["maxRetryCount"] == 3
    evaluate = spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["resources"]
    assert evaluate["accelerator"]["resourceCount"] == "1"
    prepare = spec["deploymentSpec"]["executors"]["exec-prepare"]["container"]["resources"]
    assert prepare["resourceCpuRequest"] == "4" and prepare["resourceMemoryRequest"] == "8Gi"
    for name in ("export", "register"):
        assert "resources" not in spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]


def test_gpu_tasks_placement_shm_and_data_volume(compiled):
    spec, k8s = compiled
    for name in ("exec-train", "exec-evaluate", "exec-detector"):
        # The GPU request places the pod; a node selector only when asked for.
        assert "nodeSelector" not in k8s[name]
        assert k8s[name]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        (shm,) = k8s[name]["emptyDirMounts"]
        assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
        assert shm["sizeLimit"] == "8Gi"
    for name in ("exec-prepare", "exec-train", "exec-evaluate"):
        (pvc,) = k8s[name]["pvcMount"]
        assert pvc["mountPath"] == "/data"
        assert pvc["pvcNameParameter"] == {"componentInputParameter": "data_pvc"}
    for name in ("exec-prepare", "exec-train", "exec-evaluate", "exec-detector", "exec-export",
                 "exec-register"):  # fmt: skip
        assert k8s[name]["securityContext"] == {
            "runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True
        }  # fmt: skip
    assert "pvcMount" not in k8s["exec-export"]
    for name in ("exec-train", "exec-evaluate", "exec-detector"):
        container = spec["deploymentSpec"]["executors"][name]["container"]
        cpus = {e["name"]: e["value"] for e in container["env"]}["IHL_CPUS"]
        assert cpus == container["resources"]["resourceCpuRequest"] == "10"
    for name in ("exec-prepare", "exec-register"):
        secrets = {s["secretName"]: s for s in k8s[name]["secretAsEnv"]}
        assert secrets["ihl-s3"]["optional"] is True
    # git credentials for a private dvc_repo reach prepare alone, from their own secret
    secrets = {s["secretName"]: s for s in k8s["exec-prepare"]["secretAsEnv"]}
    assert set(secrets) == {"ihl-s3", "ihl-git"}
    assert {e["envVar"] for e in secrets["ihl-git"]["keyToEnv"]} == {
        "IHL_GIT_USERNAME",
        "IHL_GIT_TOKEN",
    }
    assert secrets["ihl-git"]["optional"] is True
    assert [s["secretName"] for s in k8s["exec-register"]["secretAsEnv"]] == ["ihl-s3"]


def test_no_task_is_cached_by_default(compiled):
    spec, _ = compiled
    for name, task in spec["root"]["dag"]["tasks"].items():
        assert not task["cachingOptions"].get("enableCache"), name


def test_compile_options(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("IHL_IMAGE_REPOSITORY", "registry.example/team/ihl")
    path = tmp_path / "p.yaml"
    result = cli(
        "pipeline", "compile", "-o", path,
        "--node-selector", "pool=a100", "--node-selector", "zone=b",
        "--toleration", "dedicated=ml:NoExecute", "--shm-size", "1Gi", "--memory", "8Gi",
        "--retries", "0", "--s3-secret", "",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec, k8s = load_pipeline(path)
    default = spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"]
    assert default == image("train") and default.startswith("registry.example/team/ihl:")
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {"pool": "a100", "zone": "b"}
    assert k8s["exec-train"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    ]
    assert k8s["exec-train"]["emptyDirMounts"][0]["sizeLimit"] == "1Gi"
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert container["resources"]["resourceMemoryRequest"] == "8Gi"
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["train"]
    assert "secretAsEnv" not in k8s["exec-register"]

    pinned = "registry.example/ihl@sha256:" + "0" * 64
    assert cli("pipeline", "compile", "-o", path, "--image", pinned).exit_code == 0
    spec, _ = load_pipeline(path)
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == pinned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--node-selector", "nolabel"), "expected KEY=VALUE"),
        (("--toleration", "gpu:Never"), "EFFECT one of"),
        (("--cpu", "lots"), "cpu"),
    ],
)
def test_compile_refuses_bad_settings(cli, tmp_path, args, message):
    result = cli("pipeline", "compile", "-o", tmp_path / "p.yaml", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "p.yaml").exists()
