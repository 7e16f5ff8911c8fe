"""The KServe manifests in serving/kserve/ agree with the code that writes them and with
the KServe config.properties that `ihl export` packs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ihl.edge.registry.kserve import KSERVE_ENV, inference_service
from ihl.edge.registry.store import RegistryError

KSERVE = Path(__file__).resolve().parents[2] / "serving" / "kserve"
EXAMPLE_URI = "s3://ihl-models/registry/ihl/1/"
EXAMPLE_DIGEST = "9f2c" * 16
"""The example manifests' pinned manifest sha256 (a placeholder: yours comes from your registry)."""


@pytest.mark.parametrize(
    "gpus, name", [(0, "inferenceservice.yaml"), (1, "inferenceservice-gpu.yaml")]
)
def test_examples_are_what_the_command_writes(gpus, name, monkeypatch):
    monkeypatch.delenv("IHL_IMAGE_REPOSITORY", raising=False)
    monkeypatch.delenv("IHL_IMAGE_TAG", raising=False)
    checked_in = yaml.safe_load((KSERVE / name).read_text())
    assert checked_in == inference_service(EXAMPLE_URI, EXAMPLE_DIGEST, gpus=gpus), (
        f"serving/kserve/{name} is stale: regenerate it with inference_service()"
    )


def test_gpu_variant_asks_for_gpus_and_cpu_variant_does_not():
    cpu = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST)["spec"]["predictor"]
    gpu = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST, gpus=2)["spec"]["predictor"]
    assert "nvidia.com/gpu" not in cpu["model"]["resources"]["limits"]
    assert "tolerations" not in cpu
    assert gpu["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_service_account_binds_the_s3_secret():
    secret, account = yaml.safe_load_all((KSERVE / "s3-access.yaml").read_text())
    predictor = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST)["spec"]["predictor"]
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == predictor["serviceAccountName"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]


def test_the_kserve_config_lets_the_manifest_pin_addresses():
    """The manifest sets TS_* variables; TorchServe reads them only with enable_envvars_config."""
    config = dict(
        line.split("=", 1)
        for line in (KSERVE.parent / "kserve.config.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert config["enable_envvars_config"] == "true"
    assert KSERVE_ENV["TS_MANAGEMENT_ADDRESS"].startswith("http://127.0.0.1:")
    assert KSERVE_ENV["TS_INFERENCE_ADDRESS"] == "http://0.0.0.0:8080"  # KServe's port
    for variable in KSERVE_ENV:
        assert variable.removeprefix("TS_").lower() in config


def test_service_name_must_be_a_dns_label():
    with pytest.raises(RegistryError, match="InferenceService name 'Pose_Model'"):
        inference_service(EXAMPLE_URI, EXAMPLE_DIGEST, name="Pose_Model")


def test_the_manifest_digest_is_pinned_for_the_serve_image():
    env = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST)["spec"]["predictor"]["model"]["env"]
    assert {"name": "IHL_MANIFEST_SHA256", "value": EXAMPLE_DIGEST} in env
    with pytest.raises(RegistryError, match="64 hex digits"):
        inference_service(EXAMPLE_URI, "not-a-digest")


def test_serving_reads_with_its_own_secret_not_the_pipelines():
    """The pipeline's secret can push; a serving pod must hold nothing that can write."""
    from pipelines.settings import ClusterSettings

    secret, account = yaml.safe_load_all((KSERVE / "s3-access.yaml").read_text())
    predictor = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST)["spec"]["predictor"]
    assert account["metadata"]["name"] == predictor["serviceAccountName"]
    assert secret["metadata"]["name"] != ClusterSettings().s3_secret


KSERVE_MODEL_FIELDS = ("modelFormat", "protocolVersion", "storageUri", "runtime")
"""What KServe's v1beta1 ModelSpec adds to a core/v1 Container (the rest is a Container)."""


def as_pod_spec(predictor: dict) -> dict:
    """A v1beta1 PredictorSpec as the pod KServe makes of it: PodSpec fields, and the
    model as the container "kserve-container"; the component's own fields (Knative's
    ``containerConcurrency``) are not the pod's."""
    model = {k: v for k, v in predictor["model"].items() if k not in KSERVE_MODEL_FIELDS}
    pod = {k: v for k, v in predictor.items() if k not in ("model", "containerConcurrency")}
    return pod | {"containers": [{"name": "kserve-container", **model}]}


@pytest.mark.parametrize("gpus", [0, 1])
def test_predictor_is_a_valid_pod_spec(gpus):
    from kube_schema import as_kubernetes_reads_it

    pod = as_pod_spec(
        inference_service(EXAMPLE_URI, EXAMPLE_DIGEST, gpus=gpus)["spec"]["predictor"]
    )
    assert as_kubernetes_reads_it(pod, "V1PodSpec") == pod


def test_torchserve_runs_unprivileged_on_a_read_only_root():
    predictor = inference_service(EXAMPLE_URI, EXAMPLE_DIGEST)["spec"]["predictor"]
    security = predictor["model"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    # TorchServe's writable paths (archives and Java in /tmp, logs in its working
    # directory, the image's home) are emptyDirs.
    mounts = {m["mountPath"]: m["name"] for m in predictor["model"]["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/home/ihl"}
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert all(volumes[name] == {"name": name, "emptyDir": {}} for name in mounts.values())
