"""The process group under torchrun: joining it, sharding work across ranks, agreeing.

Every collective here has an explicit timeout, so a rank that died or hangs
ends the others' wait with an error instead of a hang; every rank does a share
of validation, so no rank waits on another for long.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

TIMEOUT_ENV = "IHL_DIST_TIMEOUT"
DEFAULT_TIMEOUT = timedelta(minutes=20)
"""Longest wait in one collective: well above a sharded validation or a checkpoint write,
well below the hours a lost rank would otherwise hold the GPUs."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    owns_group: bool = False
    """Whether this process created the process group, and so must destroy it."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def timeout() -> timedelta:
    """The collective timeout: ``IHL_DIST_TIMEOUT`` seconds, else ``DEFAULT_TIMEOUT``."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on the CPU);
    a plain process otherwise. ``device`` is the already resolved device type: a CUDA run
    binds its rank to GPU LOCAL_RANK (``device_id``, which lets NCCL set up eagerly)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    owns_group = not dist.is_initialized()
    if owns_group:
        if device.type == "cuda":
            gpu = torch.device("cuda", local_rank)
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", timeout=timeout(), device_id=gpu)
        else:
            dist.init_process_group("gloo", timeout=timeout())
    return Distributed(dist.get_rank(), world_size, local_rank, local_world_size, owns_group)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Distributed, torch.device]]:
    """This process's part in a run: ``init_distributed``'s ``Distributed`` and the device it
    computes on, a CUDA device without index being its rank's GPU (LOCAL_RANK), made current.
    On the way out the process group goes, when this process created it."""
    ddp = init_distributed(device)
    try:
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", ddp.local_rank)
            torch.cuda.set_device(device)
        yield ddp, device
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def shard(count: int, rank: int, world_size: int, batch_size: int) -> range:
    """Rank ``rank``'s share of ``count`` items: contiguous, whole batches, no item twice.

    Shards start on a multiple of ``batch_size``, so every rank forms exactly the
    batches one process would (the same numbers, batch for batch), and the shards
    in rank order are the items in order.
    """
    batches = -(-count // batch_size)
    per_rank = -(-batches // world_size)
    start = min(rank * per_rank * batch_size, count)
    return range(start, min(start + per_rank * batch_size, count))


def gather_to_main(obj: Any, ddp: Distributed) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if ddp.world_size == 1:
        return [obj]
    gathered: list[Any] | None = [None] * ddp.world_size if ddp.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(obj: Any, ddp: Distributed) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if ddp.world_size == 1:
        return obj
    box = [obj if ddp.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


T = TypeVar("T")


def build_on_main(build: Callable[[], T], ddp: Distributed) -> T:
    """``build()`` run on rank 0 only and its result handed to every rank.

    For datasets: parsing COCO's training annotations takes tens of seconds and
    gigabytes, eight times at once on a node when every rank parses them. An error
    on rank 0 is raised on every rank, so none waits for a dataset that never comes.
    """
    if ddp.world_size == 1:
        return build()
    result: Any = None
    if ddp.is_main:
        try:
            result = build()
        except Exception as err:  # handed to every rank, raised there
            result = err
    result = broadcast_from_main(result, ddp)
    if isinstance(result, Exception):
        raise result
    return result
