"""Training past one node: a Kubeflow Training Operator PyTorchJob manifest.

One pod per node (a Master and ``nodes - 1`` Workers), each running torchrun
with one process per GPU. The operator gives every pod MASTER_ADDR (the
Master's service) and MASTER_PORT; torchrun's c10d rendezvous meets there (the
Master pod hosts its store) and hands out the node and process ranks, so a pod
that restarts rejoins whatever its index, and ``--max-restarts`` lets torchrun
restart the worker group in place before Kubernetes restarts the pod. Each
``ihl train`` process asks for CUDA explicitly (``--device cuda``), so a node
whose driver cannot run torch's CUDA fails at once rather than training on gloo.
Data, staged ImageNet weights and the run folder are on the data PVC
(ReadWriteMany, since every node mounts it); only global rank 0 writes
checkpoints, and a restarted job resumes from ``latest.pt``. The pods run as the
image's user with the volume's group (``fsGroup``), no privilege escalation, no
capabilities and a read-only root (``POD_SECURITY``, ``CONTAINER_SECURITY``).
"""

from __future__ import annotations

import copy
from typing import Any

from ihl import config
from ihl.device import CPUS_ENV
from ihl.edge.container_images import IMAGE_UID
from ihl.weights import WEIGHTS_ENV
from pipelines.settings import VOLUME_MOUNT, ClusterSettings

NCCL_ENV = {
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
}
"""NCCL warnings in the pod log, and a failed or timed-out collective aborts the process
(torchrun then restarts the group) instead of leaving the other ranks waiting."""
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_UID,
    "fsGroup": IMAGE_UID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The image's user; ``fsGroup`` makes the data volume (runs, checkpoints) writable by it,
changing ownership only when the volume's root does not already carry the group."""
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}
SCRATCH = {"tmp": "/tmp", "home": "/home/ihl"}
"""Writable emptyDirs under the read-only root: temporary files, and caches in the home
folder (torch.compile's and Triton's kernels)."""


def pytorchjob_manifest(
    name: str,
    *,
    image: str,
    nodes: int,
    gpus_per_node: int,
    preset: str,
    data_path: str,
    overrides: dict[str, Any] | None = None,
    data_pvc: str = "ihl-data",
    cluster: ClusterSettings | None = None,
    namespace: str | None = None,
    max_restarts: int = 3,
    rdma_resource: str | None = None,
    nccl_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The PyTorchJob (kubeflow.org/v1) training ``preset`` on ``nodes`` x ``gpus_per_node`` GPUs.

    ``data_path`` is the dataset folder on the data volume; the run folder is
    ``/data/runs/<name>``. ``overrides`` are dotted config keys, as ``ihl train --set``; the
    pods' ``ihl train`` resolves them over the preset with ``config.resolve``, as this function
    does first, so a bad key is refused here rather than in every pod.
    CPU, memory and /dev/shm scale with ``gpus_per_node`` (``ClusterSettings.resources``).
    Loader workers follow the CPU request (IHL_CPUS), not the limit. ``rdma_resource``
    (e.g. ``rdma/ib``, the device plugin's resource name) requests one RDMA device per
    pod; NCCL registers memory with it under the node runtime's locked-memory limit
    (no capability: IPC_LOCK would not reach a non-root process). ``nccl_env`` adds to or
    overrides ``NCCL_ENV`` (e.g. NCCL_SOCKET_IFNAME).
    """
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be 1 or more, got {nodes}, {gpus_per_node}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be 0 or more, got {max_restarts}")
    cluster = cluster or ClusterSettings()
    root = f"{VOLUME_MOUNT}/{data_path.strip('/')}"
    config.resolve(preset, overrides, data_root=root)  # refuse here what `ihl train` would
    sets = {"data.root": root, **(overrides or {})}
    command = [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={gpus_per_node}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)",
        f"--rdzv-id={name}",
        f"--max-restarts={max_restarts}",
        "--no-python",
        "ihl",
        "train",
        "-c",
        preset,
        "-o",
        f"{VOLUME_MOUNT}/runs/{name}",
        "--resume",
        "--device",
        "cuda",
    ]
    for key, value in sets.items():
        command += ["--set", f"{key}={_yaml_value(value)}"]
    sizes = cluster.resources(gpus_per_node)
    devices = {cluster.accelerator: str(gpus_per_node)}
    if rdma_resource:
        devices[rdma_resource] = "1"
    resources = {
        "requests": {"cpu": sizes.cpu_request, "memory": sizes.memory_request, **devices},
        "limits": {"cpu": sizes.cpu_limit, "memory": sizes.memory_limit, **devices},
    }
    env = {WEIGHTS_ENV: cluster.weights_dir, CPUS_ENV: sizes.cpus, **NCCL_ENV, **(nccl_env or {})}
    container: dict[str, Any] = {
        # The operator finds the training container by this name.
        "name": "pytorch",
        "image": image,
        "command": command,
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "resources": resources,
        "volumeMounts": [
            {"name": "data", "mountPath": VOLUME_MOUNT},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": name, "mountPath": path} for name, path in SCRATCH.items()),
        ],
        "securityContext": CONTAINER_SECURITY,
    }
    pod = {
        "spec": {
            "securityContext": POD_SECURITY,
            **({"nodeSelector": dict(cluster.node_selector)} if cluster.node_selector else {}),
            "tolerations": [
                {"key": t.key, "operator": "Exists", "effect": t.effect}
                if t.value is None
                else {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
                for t in cluster.tolerations
            ],
            "containers": [container],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": data_pvc}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": sizes.shm_size}},
                *({"name": name, "emptyDir": {}} for name in SCRATCH),
            ],
        }
    }
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod}}
    if nodes > 1:
        worker = copy.deepcopy(pod)
        replicas["Worker"] = {
            "replicas": nodes - 1,
            "restartPolicy": "OnFailure",
            "template": worker,
        }
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "runPolicy": {"backoffLimit": cluster.train_retries, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def _yaml_value(value: Any) -> str:
    """A ``--set`` value as ``ihl train`` parses it (YAML), in flow style on one line."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
