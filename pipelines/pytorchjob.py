"""Training past one node: a Kubeflow Training Operator PyTorchJob manifest.

One pod per node (a Master and ``nodes - 1`` Workers), each running torchrun
with one process per GPU. The operator gives every pod MASTER_ADDR (the
Master's service), MASTER_PORT and RANK (the pod's index, 0 for the Master),
which Kubernetes substitutes into torchrun's arguments as the rendezvous
address and node rank; torchrun then sets
WORLD_SIZE, RANK and LOCAL_RANK for each ``ihl train`` process, which joins the
process group as it does under ``--standalone``. Data and the run folder are on
the data PVC (ReadWriteMany, since every node mounts it); only global rank 0
writes checkpoints, and a restarted pod resumes from ``latest.pt``.
"""

from __future__ import annotations

import copy
from typing import Any

from pipelines.settings import VOLUME_MOUNT, ClusterSettings


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
) -> dict[str, Any]:
    """The PyTorchJob (kubeflow.org/v1) training ``preset`` on ``nodes`` x ``gpus_per_node`` GPUs.

    ``data_path`` is the dataset folder on the data volume; the run folder is
    ``/data/runs/<name>``. ``overrides`` are dotted config keys, as ``ihl train --set``.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be 1 or more, got {nodes}, {gpus_per_node}")
    cluster = cluster or ClusterSettings()
    sets = {"data.root": f"{VOLUME_MOUNT}/{data_path.strip('/')}", **(overrides or {})}
    command = [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={gpus_per_node}",
        "--node-rank=$(RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "--no-python",
        "ihl",
        "train",
        "-c",
        preset,
        "-o",
        f"{VOLUME_MOUNT}/runs/{name}",
        "--resume",
    ]
    for key, value in sets.items():
        command += ["--set", f"{key}={_yaml_value(value)}"]
    resources = {
        "requests": {
            "cpu": cluster.cpu_request,
            "memory": cluster.memory_request,
            cluster.accelerator: gpus_per_node,
        },
        "limits": {
            "cpu": cluster.cpu_limit,
            "memory": cluster.memory_limit,
            cluster.accelerator: gpus_per_node,
        },
    }
    pod = {
        "spec": {
            "nodeSelector": dict(cluster.node_selector),
            "tolerations": [
                {"key": t.key, "operator": "Exists", "effect": t.effect}
                if t.value is None
                else {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
                for t in cluster.tolerations
            ],
            "containers": [
                {
                    # The operator finds the training container by this name.
                    "name": "pytorch",
                    "image": image,
                    "command": command,
                    "resources": resources,
                    "volumeMounts": [
                        {"name": "data", "mountPath": VOLUME_MOUNT},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                    ],
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": data_pvc}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cluster.shm_size}},
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
