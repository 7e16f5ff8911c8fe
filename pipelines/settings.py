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
class Resources:
    """A pod's CPU, memory and /dev/shm, as Kubernetes quantities."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    shm_size: str

    @property
    def cpus(self) -> str:
        """The CPU request in CPUs ("500m" -> "0.5"), as ``ihl`` reads it from IHL_CPUS."""
        quantity = self.cpu_request
        return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


@dataclass(frozen=True)
class ClusterSettings:
    """What the tasks ask of the cluster, all fixed when the pipeline is compiled.

    ``num_gpus`` is the train task's GPU count, written into the pipeline as a
    literal: KFP backends that do not resolve resource placeholders at run time
    (before 2.5) drop a request that names a run parameter, and the pod would get
    no GPU. CPU, memory and /dev/shm of the GPU tasks scale with their GPU count
    (``*_per_gpu``) unless given outright (``cpu_request`` ... ``shm_size``).
    """

    num_gpus: int = 1
    accelerator: str = "nvidia.com/gpu"
    cpu_per_gpu: int = 10
    """CPU request per GPU: a loader worker decodes and augments about 200 samples/s on one
    core (benchmarks/data.py), and a GPU trains ResNet-50 at 256x192 at 1-2k images/s."""
    memory_per_gpu_gi: int = 32
    """Memory request per GPU in GiB (the limit is twice that): the rank, its workers'
    copies of the annotations and the pinned batches."""
    shm_per_gpu_gi: int = 8
    """Memory-backed /dev/shm per GPU in GiB, through which workers pass batches."""
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    shm_size: str | None = None
    prepare: Resources = Resources("4", "8", "8Gi", "16Gi", "1Gi")
    """The prepare task: checks annotations, stats (and on first sight hashes) every file."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Labels the GPU tasks' nodes must carry; none by default: the GPU request alone places
    a pod on a node that has the GPUs, and a label that only some installations put on
    their nodes (NVIDIA's ``nvidia.com/gpu.present``) would leave it Pending elsewhere."""
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    """GPU nodes are usually tainted so that only pods asking for GPUs land there."""
    train_retries: int = 3
    s3_secret: str | None = "ihl-s3"
    """Secret with the S3 keys (S3_KEYS) for DVC remotes and the registry; optional in the pod."""
    git_secret: str | None = "ihl-git"
    """Secret with ``username`` and ``token`` (GIT_KEYS) for a private ``dvc_repo``; optional.
    A token never goes into the URL, which is a run parameter, stored and shown in clear."""
    weights_dir: str = f"{VOLUME_MOUNT}/weights"
    """Staged ImageNet weights (``ihl weights fetch``), IHL_WEIGHTS_DIR of the GPU tasks."""

    def __post_init__(self) -> None:
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus must be 0 or more, got {self.num_gpus}")

    def resources(self, gpus: int) -> Resources:
        """CPU, memory and /dev/shm of a task with ``gpus`` GPUs (a CPU-only run counts as
        one): the per-GPU sizes times the count, unless set outright."""
        n = max(gpus, 1)
        return Resources(
            self.cpu_request or str(self.cpu_per_gpu * n),
            self.cpu_limit or str(2 * self.cpu_per_gpu * n),
            self.memory_request or f"{self.memory_per_gpu_gi * n}Gi",
            self.memory_limit or f"{2 * self.memory_per_gpu_gi * n}Gi",
            self.shm_size or f"{self.shm_per_gpu_gi * n}Gi",
        )
