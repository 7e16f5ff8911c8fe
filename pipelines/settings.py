"""What the pipeline asks of a Kubernetes cluster: GPUs, resources, placement, volumes, secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
"""Keys of the S3 secret, each becoming the environment variable of that name."""
GIT_KEYS = {"username": "IHL_GIT_USERNAME", "token": "IHL_GIT_TOKEN"}
"""Keys of the git secret and the variables prepare reads them from."""


VOLUME_MOUNT = "/data"
"""Where the data PVC is mounted in the prepare, train and evaluate pods."""


@dataclass(frozen=True)
class Toleration:
    key: str
    effect: str = "NoSchedule"
    value: str | None = None
    """None tolerates any value of ``key`` (operator Exists)."""

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """``KEY[=VALUE][:EFFECT]``, e.g. ``nvidia.com/gpu:NoSchedule``."""
        spec, _, effect = text.partition(":")
        key, has_value, value = spec.partition("=")
        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        if not key or (effect and effect not in effects):
            raise ValueError(
                f"toleration {text!r}: expected KEY[=VALUE][:EFFECT], EFFECT one of {effects}"
            )
        return cls(key, effect or "NoSchedule", value if has_value else None)


@dataclass(frozen=True)
class ClusterSettings:
    """What the GPU tasks ask of the cluster. The GPU count is the ``num_gpus`` run parameter;
    the rest is fixed when the pipeline is compiled."""

    accelerator: str = "nvidia.com/gpu"
    cpu_request: str = "8"
    cpu_limit: str = "16"
    memory_request: str = "32Gi"
    memory_limit: str = "64Gi"
    shm_size: str = "16Gi"
    """Size limit of the memory-backed /dev/shm that DataLoader workers pass batches through."""
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    """The label NVIDIA's GPU operator puts on GPU nodes."""
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    """GPU nodes are usually tainted so that only pods asking for GPUs land there."""
    train_retries: int = 3
    s3_secret: str | None = "ihl-s3"
    """Secret with the S3 keys (S3_KEYS) for DVC remotes and the registry; optional in the pod."""
    git_secret: str | None = "ihl-git"
    """Secret with ``username`` and ``token`` (GIT_KEYS) for a private ``dvc_repo``; optional.
    A token never goes into the URL, which is a run parameter, stored and shown in clear."""
