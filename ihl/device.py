"""Which device to run on, and how many CPUs this process really has.

A GPU that was asked for and is not usable is an error, never a quiet fall back
to the CPU: a training pod that silently trains on its CPU (or a PyTorchJob that
silently falls back to gloo) wastes the GPU it holds for days. The usual cause
is an NVIDIA driver older than the CUDA build of torch needs, so the error names
both versions.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import torch

MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
"""Oldest Linux NVIDIA driver for each CUDA major version (CUDA's minor-version compatibility)."""

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
GPU_DEVICE_FILE = Path("/dev/nvidia0")


class DeviceError(ValueError):
    """The requested device cannot be used; the message says why and what would fix it."""


def driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. "535.104.05"), or None without one."""
    try:
        text = DRIVER_VERSION_FILE.read_text()
    except OSError:
        text = ""
    match = re.search(r"Kernel Module(?: for \w+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if match:
        return match.group(1)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def gpu_present() -> bool:
    """Whether this machine or container was given an NVIDIA GPU (a device node or a driver)."""
    return GPU_DEVICE_FILE.exists() or DRIVER_VERSION_FILE.exists()


def cuda_problem() -> str | None:
    """Why CUDA is not usable here, in one sentence naming the driver found and needed; None
    when it is."""
    build = torch.version.cuda
    if build is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch "
            "(the image's TORCH_CUDA build argument picks one)"
        )
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return None
    needed = MIN_DRIVER.get(int(build.split(".")[0]), "a recent one")
    found = driver_version()
    if found is None:
        return (
            f"no NVIDIA driver found (no {DRIVER_VERSION_FILE}, no nvidia-smi); torch "
            f"{torch.__version__} is built for CUDA {build}, which needs driver >= {needed}"
        )
    return (
        f"NVIDIA driver {found} cannot run torch {torch.__version__} (CUDA {build}, needs "
        f"driver >= {needed}); upgrade the driver or build the image with a TORCH_CUDA "
        "variant that this driver supports (see docs/cluster.md)"
    )


def resolve_device(device: str | None = None) -> torch.device:
    """The requested device; None means CUDA when this machine has a GPU, else the CPU.

    A CUDA device (asked for, or implied by a GPU on the machine) that cannot be
    used raises DeviceError naming the driver version found and the one needed,
    instead of running on the CPU.
    """
    if device is None:
        if not gpu_present() and not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"device {device!r}: {err}") from None
    if resolved.type != "cuda":
        return resolved
    problem = cuda_problem()
    if problem is not None:
        hint = "" if device != "cuda" else " (pass --device cpu to run on the CPU anyway)"
        raise DeviceError(f"device {device!r} requested but CUDA is not usable: {problem}{hint}")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise DeviceError(f"device {device!r} requested but this process sees {count} GPU(s)")
    return resolved


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (cgroup v2 cpu.max or v1 cfs files), or
    None when unlimited. Kubernetes' CPU limit arrives here, not in os.cpu_count()."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


CPUS_ENV = "IHL_CPUS"
"""CPUs a pod is guaranteed (its CPU request, set by the pipeline and the PyTorchJob): the
cgroup quota is the limit, which the pod only gets when the node has cores to spare."""


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up)
    and by ``IHL_CPUS`` when set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    request = os.environ.get(CPUS_ENV)
    for cap in (cgroup_cpu_limit(cgroup_root), float(request) if request else None):
        if cap is not None:
            cpus = min(cpus or 1, max(1, math.ceil(cap)))
    return max(1, cpus or 1)


def loader_workers(processes_per_node: int, cpus: int | None = None) -> int:
    """DataLoader workers per training process: the node's CPUs shared between its processes,
    one CPU each kept for the process itself (its main thread feeds the GPU)."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, processes_per_node) - 1)


def num_workers(setting: int | str, processes_per_node: int = 1) -> int:
    """A ``train.num_workers`` value as a count: itself, or ``loader_workers`` for "auto"."""
    return loader_workers(processes_per_node) if setting == "auto" else int(setting)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16, AMX or Arm's BF16).

    Without them bf16 convolutions are emulated: a sample-preset step took 3.7 s against
    0.23 s in float32 on an AVX2-only oneDNN (``ONEDNN_MAX_CPU_ISA=AVX2``).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``: bf16 on CUDA and on CPUs with bf16
    instructions, fp16 on CUDA only; None (float32) otherwise."""
    if amp == "bf16":
        return torch.bfloat16 if device.type != "cpu" or cpu_has_bf16() else None
    if amp == "fp16" and device.type == "cuda":
        return torch.float16
    return None
