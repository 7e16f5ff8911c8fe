"""KServe InferenceService manifests for registry versions (TorchServe in the serve image)."""

from __future__ import annotations

import re
from typing import Any

from ihl.edge.container_images import IMAGE_UID
from ihl.edge.container_images import image as image_ref
from ihl.edge.registry.store import RegistryError, pinned_version

KSERVE_ENV = {
    "TS_INFERENCE_ADDRESS": "http://0.0.0.0:8080",
    "TS_MANAGEMENT_ADDRESS": "http://127.0.0.1:8081",
    "TS_METRICS_ADDRESS": "http://0.0.0.0:8082",
    "TS_SERVICE_ENVELOPE": "kserve",
}
"""TorchServe settings an InferenceService pins through the environment (see inference_service)."""
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_UID,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The TorchServe container's: the image's user, nothing more. All on the container, which
Knative admits without its pod security-context feature flag."""
CONTAINER_CONCURRENCY = 28
"""Full-size bodies (28 MiB) that TorchServe's direct memory (1 GiB, kserve.config.properties)
holds beside one batch of 8: (1024 - 8 x 28) // 28."""
SCRATCH = {"tmp": "/tmp", "home": "/home/ihl"}
"""Writable emptyDirs under the read-only root: TorchServe unpacks archives and Java keeps
its files in /tmp, and writes its logs in its working directory, the image's home."""
DIGEST_VARIABLE = "IHL_MANIFEST_SHA256"
"""Read by the serve image's entrypoint (serving/verify_models.py) before TorchServe starts."""


def inference_service(
    storage_uri: str,
    manifest_sha256: str,
    *,
    name: str = "ihl",
    gpus: int = 0,
    service_account: str = "ihl-s3-read",
    image: str | None = None,
) -> dict:
    """A KServe InferenceService for one registry version (``storage_uri``).

    KServe's ``pytorch`` model format with protocol v1: the storage initializer
    downloads the version to /mnt/models using the S3 credentials bound to
    ``service_account``; the serve image (``ihl.edge.container_images.image("serve")``, which
    holds the handler's dependencies) runs TorchServe in the foreground, under
    the image's entrypoint, on that folder's model store and KServe
    config.properties. That config lets the environment override it
    (enable_envvars_config), which pins what KServe relies on whatever the
    image's defaults: inference on the pod port 8080 with the v1 envelope,
    management on the pod's loopback only, metrics on 8082 for Prometheus.
    Knative lets at most ``CONTAINER_CONCURRENCY`` requests into a pod at once and queues
    the rest, which TorchServe cannot do for itself (docs/serving.md, "Memory of the
    frontend"). ``gpus`` > 0 asks for that many ``nvidia.com/gpu`` and tolerates GPU taints. The
    container runs as the image's user without privileges on a read-only root
    (``SECURITY_CONTEXT``), writing only to emptyDirs.

    ``manifest_sha256`` pins the version: the image's entrypoint checks the downloaded
    files against the manifest with that sha256 and refuses to start TorchServe on
    anything else, so whoever can write the bucket cannot run code in the pods.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", manifest_sha256):
        raise RegistryError(f"manifest sha256 {manifest_sha256!r}: expected 64 hex digits")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?", name):
        raise RegistryError(
            f"InferenceService name {name!r}: use lowercase letters, digits and '-' "
            "(a DNS label of at most 45 characters, starting with a letter)"
        )
    limits = {"cpu": "4", "memory": "8Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    predictor: dict[str, Any] = {
        "serviceAccountName": service_account,
        "containerConcurrency": CONTAINER_CONCURRENCY,
        "model": {
            "modelFormat": {"name": "pytorch"},
            "protocolVersion": "v1",
            "storageUri": storage_uri,
            "image": image or image_ref("serve"),
            "args": [
                "torchserve",
                "--foreground",
                "--no-config-snapshots",
                "--model-store=/mnt/models/model-store",
                "--ts-config=/mnt/models/config/config.properties",
            ],
            "env": [
                *({"name": k, "value": v} for k, v in KSERVE_ENV.items()),
                {"name": DIGEST_VARIABLE, "value": manifest_sha256},
            ],
            "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": limits},
            "securityContext": SECURITY_CONTEXT,
            "volumeMounts": [{"name": name, "mountPath": path} for name, path in SCRATCH.items()],
        },
        "volumes": [{"name": name, "emptyDir": {}} for name in SCRATCH],
    }
    if gpus:
        predictor["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": predictor},
    }


def kserve_manifest(
    uri: str,
    name: str,
    version_or_alias: str,
    *,
    service_name: str | None = None,
    gpus: int = 0,
    service_account: str = "ihl-s3-read",
    image: str | None = None,
    endpoint_url: str | None = None,
) -> dict:
    """The InferenceService for a registry version; an alias is resolved to its version
    now (KServe knows nothing of aliases), the version is checked to be complete and its
    manifest's sha256 is pinned."""
    storage_uri, digest = pinned_version(uri, name, version_or_alias, endpoint_url=endpoint_url)
    return inference_service(
        storage_uri,
        digest,
        name=service_name or name,
        gpus=gpus,
        service_account=service_account,
        image=image,
    )
