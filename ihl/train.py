"""Training stage: the paper's schedule, checkpoints that resume exactly, AMP and DDP.

Shaped like the torchvision references: ``train`` sets everything up and
``train_one_epoch`` runs the loop; validation reuses ``ihl.evaluate``.

A resumed run ends with the weights of an uninterrupted one because nothing the
loop consumes depends on history that latest.pt does not hold: a sample's
augmentation depends only on (seed, epoch, index) (the datasets seed it so), an
epoch's order only on (seed, epoch) (DistributedSampler seeds its own
torch.Generator with seed + epoch), and the checkpoint carries the weights, the
flow, optimizer, schedule, scaler, RNG states and the position inside the epoch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ihl import config as config_mod
from ihl.checkpoint import CheckpointError, safe_load, save_model
from ihl.config import Config
from ihl.data.build import build_train_dataset, build_val_dataset, worker_init
from ihl.data.errors import DatasetError
from ihl.evaluate import predict_dataset, score
from ihl.files import folder_lock, remove_temporaries, torch_save
from ihl.inference import resolve_device
from ihl.losses import build_loss
from ihl.models import build_model

log = logging.getLogger(__name__)

STATE_FORMAT = "ihl-train-state/1"
TARGET_KEYS = ("coords", "weights", "heatmaps")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """Whether ``train`` created the process group, and so must destroy it."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1; a plain process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return Distributed(dist.get_rank(), world_size, local_rank, owns_group)


class EpochLog(Protocol):
    """Where ``train`` reports a run, from the main process only; ``ihl.edge.live`` writes
    DVCLive files, and any object with these methods will do."""

    def start(self, params: dict[str, Any], resumed: bool, epoch: int) -> None:
        """Before the first epoch: the config, and whether the run continues at ``epoch``."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch: train/<loss term> means, train/lr, and val/<metric> when it was
        validated."""

    def end(self) -> None:
        """Once, also when training fails."""


@dataclass
class PaperSchedule:
    """lr factor at an iteration: linear warm-up from ``warmup_ratio``, then x ``lr_factor`` at
    each of ``lr_steps`` (epochs). A plain object, so LambdaLR saves and restores its fields."""

    iters_per_epoch: int
    warmup_iters: int
    warmup_ratio: float
    lr_steps: tuple[int, ...]
    lr_factor: float

    def __call__(self, iteration: int) -> float:
        epoch = iteration // self.iters_per_epoch
        factor = self.lr_factor ** sum(epoch >= step for step in self.lr_steps)
        if iteration < self.warmup_iters:
            progress = iteration / self.warmup_iters
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * progress
        return factor


class TrainStep(nn.Module):
    """Model and loss as one module, so DDP also averages the gradients of the loss's flow.

    The model runs under autocast; the loss always sees float32 outputs (the
    likelihood's logs and the flow are sensitive to half precision).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, amp_dtype: torch.dtype | None):
        super().__init__()
        self.model, self.criterion, self.amp_dtype = model, criterion, amp_dtype

    def forward(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.autocast(images.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.model(images)
        return self.criterion({k: v.float() for k, v in out.items()}, targets)


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


class SkipSampler(Sampler[int]):
    """Another sampler's order without its first ``skip`` indices: resuming inside an epoch."""

    def __init__(self, sampler: Sampler[int], skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


@dataclass
class TrainState:
    """Where training is: ``step`` batches of ``epoch`` done, ``iteration`` steps in all."""

    epoch: int = 0
    step: int = 0
    iteration: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    """Loss terms summed over the steps of the current epoch, for its mean."""
    best: dict[str, float] = field(default_factory=dict)
    """Validation metrics of best.pt."""


def rng_state() -> dict[str, Any]:
    """Every global RNG, as plain values and tensors so it loads with weights_only=True."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_loader(
    dataset: Dataset, cfg: Config, ddp: Distributed, state: TrainState, pin_memory: bool
) -> DataLoader:
    """The loader of ``state.epoch`` from ``state.step`` on. A new one each epoch: workers are
    forked from the dataset after ``set_epoch``, so they augment for the right epoch."""
    dataset.set_epoch(state.epoch)
    sampler = DistributedSampler(
        dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=cfg.train.seed
    )
    sampler.set_epoch(state.epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=SkipSampler(sampler, state.step * cfg.train.batch_size),
        num_workers=cfg.train.num_workers,
        worker_init_fn=worker_init,
        pin_memory=pin_memory,
        drop_last=True,
    )


def validate(
    model: nn.Module,
    cfg: Config,
    dataset: Dataset,
    ground_truth: Path,
    device: torch.device,
    progress: bool,
) -> dict[str, float]:
    predictions = predict_dataset(model, cfg, dataset, device, cfg.train.batch_size, progress)
    return score(cfg, predictions, ground_truth)[0]


def key_metric(cfg: Config) -> str:
    return "PCKh" if cfg.data.dataset == "mpii" else "AP"


def is_better(metrics: dict[str, float], best: dict[str, float], key: str) -> bool:
    value = metrics.get(key, math.nan)
    return math.isfinite(value) and (not best or value > best[key])


def train_one_epoch(
    step_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: DataLoader,
    state: TrainState,
    device: torch.device,
    cfg: Config,
    *,
    save: Callable[[], None],
    on_step: Callable[[int], None] | None,
    bar: tqdm,
) -> None:
    """One pass over ``loader``, saving latest.pt every ``checkpoint_interval_iters`` steps."""
    interval = cfg.train.checkpoint_interval_iters
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = {k: batch[k].to(device, non_blocking=True) for k in TARGET_KEYS if k in batch}
        terms = step_fn(images, targets)
        values = {k: v.item() for k, v in terms.items()}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"loss is {values['loss']} at epoch {state.epoch}, iteration {state.iteration} "
                f"(terms {values}); latest.pt still holds the last good state"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state.step += 1
        state.iteration += 1
        for key, value in values.items():
            state.sums[key] = state.sums.get(key, 0.0) + value
        bar.update()
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if interval and state.iteration % interval == 0:
            save()
        if on_step is not None:
            on_step(state.iteration)


def build_optimizer(
    params: Iterator[nn.Parameter], cfg: Config, world_size: int, iters_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with the paper's schedule, stepped once per iteration; lr scaled to the global batch
    when ``scale_lr``. The fused Adam kernel computes the same update in one pass: on two CPU
    cores the step of a ResNet-18 fell from 28 to 7 ms."""
    train_cfg = cfg.train
    lr = train_cfg.lr
    if train_cfg.scale_lr:
        lr *= train_cfg.batch_size * world_size / train_cfg.base_batch_size
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)
    schedule = PaperSchedule(
        iters_per_epoch,
        train_cfg.warmup_iters,
        train_cfg.warmup_ratio,
        tuple(train_cfg.lr_steps),
        train_cfg.lr_factor,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train(
    cfg: Config,
    out_dir: Path,
    *,
    resume: bool | str = False,
    device: str | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    epoch_log: EpochLog | None = None,
    data_fingerprint: str | None = None,
) -> dict[str, float]:
    """Train ``cfg`` into ``out_dir``; returns the validation metrics of the best checkpoint.

    Writes ``checkpoints/latest.pt`` (full training state, at each epoch end and
    every ``train.checkpoint_interval_iters`` steps) and ``checkpoints/best.pt`` (model
    only, best validation AP or PCKh), and reports each epoch to ``epoch_log`` (the
    command line passes ``ihl.edge.live.LiveLog``, DVCLive files under ``live/``);
    under torchrun only rank 0 writes. With ``resume`` a run continues from latest.pt
    when there is one (so a restarted pod can always pass it). ``on_step(iteration)``
    is called after every optimisation step, once any checkpoint of that step is
    written. Datasets are checked before anything is written.

    ``resume="matching"`` resumes only a state of this config and data and otherwise
    trains from scratch (what ``dvc repro`` runs after a change of params).

    ``out_dir`` is locked for the run (``ihl.files.folder_lock``): a second run on the same
    folder fails at once instead of overwriting its checkpoints; temporary files a killed
    run left there are removed. ``data_fingerprint`` (``ihl prepare``'s) is saved with the
    training state, and a resume is refused unless the config and the fingerprint are
    those of the run that wrote latest.pt.
    """
    ddp = init_distributed()
    try:
        with contextlib.ExitStack() as held:
            return _train(
                cfg, Path(out_dir), ddp, resume, device, progress, on_step, epoch_log,
                data_fingerprint, held,
            )  # fmt: skip
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, lists and tuples alike (as JSON has them)."""
    flat = {}
    for key, value in json.loads(json.dumps(tree)).items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(
    ckpt: dict[str, Any], cfg: Config, data_fingerprint: str | None, path: Path
) -> None:
    """Refuse to continue a training state written with another config or other data: the
    result would be a model of neither (a resume used to compare nothing)."""
    saved, current = _flat(ckpt.get("config") or {}), _flat(config_mod.to_dict(cfg))
    changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:6])
        raise CheckpointError(
            f"{path} was written with another config ({shown}): resuming would mix two runs. "
            "Resume with the config it was written with, or delete it to train from scratch"
        )
    if ckpt.get("data_fingerprint") != data_fingerprint:
        raise CheckpointError(
            f"{path} was written on other data (fingerprint {ckpt.get('data_fingerprint')!r}, "
            f"now {data_fingerprint!r}): resuming would mix two datasets. Delete it to train "
            "from scratch on this data"
        )


def _train(
    cfg: Config,
    out_dir: Path,
    ddp: Distributed,
    resume: bool | str,
    device: str | None,
    progress: bool,
    on_step: Callable[[int], None] | None,
    epoch_log: EpochLog | None,
    data_fingerprint: str | None,
    held: contextlib.ExitStack,
) -> dict[str, float]:
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", ddp.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True

    train_set = build_train_dataset(cfg)
    val_set, ground_truth = build_val_dataset(cfg)
    iters_per_epoch = math.ceil(len(train_set) / ddp.world_size) // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise DatasetError(
            f"{cfg.data.root}: {len(train_set)} training samples do not fill one batch of "
            f"{cfg.train.batch_size} per device"
        )
    if ddp.is_main:
        held.enter_context(folder_lock(out_dir))
        for path in remove_temporaries(out_dir / "checkpoints"):
            log.info("removed %s, left by a run killed while writing it", path)
    latest_path = out_dir / "checkpoints" / "latest.pt"
    best_path = out_dir / "checkpoints" / "best.pt"
    resuming = resume and latest_path.is_file()

    seed_everything(cfg.train.seed)
    model = build_model(cfg.model).to(dev)
    criterion = build_loss(cfg.model.head, cfg.loss).to(dev)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(cfg.train.amp, dev)
    if cfg.train.amp != "off" and amp_dtype is None:
        log.warning(
            "train.amp %s is not used on this %s (%s); training in float32",
            cfg.train.amp,
            dev.type,
            "fp16 is for CUDA" if cfg.train.amp == "fp16" else "no bf16 instructions",
        )
    step_fn: nn.Module = TrainStep(model, criterion, amp_dtype)
    optimizer, scheduler = build_optimizer(
        step_fn.parameters(), cfg, ddp.world_size, iters_per_epoch
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    parts = {
        "model": model,
        "criterion": criterion,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
    }

    state = TrainState()
    ckpt = safe_load(latest_path) if resuming else {}
    if resuming:
        if ckpt.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{latest_path}: not a training state ({ckpt.get('format')!r})")
        try:
            check_resumable(ckpt, cfg, data_fingerprint, latest_path)
        except CheckpointError as err:
            if resume != "matching":
                raise
            log.warning("%s; training from scratch instead", err)
            resuming = False
    if resuming:
        for name, part in parts.items():
            part.load_state_dict(ckpt[name])
        state = TrainState(**ckpt["state"])
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at epoch %d, step %d", latest_path, state.epoch, state.step)

    def save_latest() -> None:
        if ddp.is_main:
            torch_save(
                {
                    "format": STATE_FORMAT,
                    "config": config_mod.to_dict(cfg),
                    "data_fingerprint": data_fingerprint,
                    **{name: part.state_dict() for name, part in parts.items()},
                    "state": vars(state),
                    "rng": rng_state(),
                },
                latest_path,
            )

    if ddp.world_size > 1:
        step_fn = DistributedDataParallel(
            step_fn, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    report = epoch_log if ddp.is_main else None
    if report is not None:
        report.start(config_mod.to_dict(cfg), resuming, state.epoch)

    key = key_metric(cfg)
    show = progress and ddp.is_main
    epochs = cfg.train.epochs
    try:
        while state.epoch < epochs:
            epoch = state.epoch
            if hasattr(criterion, "set_epoch"):
                criterion.set_epoch(epoch)
            loader = train_loader(train_set, cfg, ddp, state, dev.type == "cuda")
            model.train()
            with tqdm(
                total=iters_per_epoch,
                initial=state.step,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not show,
            ) as bar:
                train_one_epoch(
                    step_fn,
                    optimizer,
                    scheduler,
                    scaler,
                    loader,
                    state,
                    dev,
                    cfg,
                    save=save_latest,
                    on_step=on_step,
                    bar=bar,
                )

            metrics: dict[str, float] = {}
            if (epoch + 1) % cfg.train.val_interval == 0 or epoch + 1 == epochs:
                if ddp.is_main:
                    metrics = validate(model, cfg, val_set, ground_truth, dev, show)
                if ddp.world_size > 1:
                    shared = [metrics]
                    dist.broadcast_object_list(shared)
                    metrics = shared[0]
            if metrics and is_better(metrics, state.best, key):
                state.best = {**metrics, "epoch": float(epoch + 1)}
                if ddp.is_main:
                    save_model(best_path, model, cfg, epoch=epoch + 1, metrics=metrics)
            if report is not None:
                logged = {
                    f"train/{name}": total / iters_per_epoch for name, total in state.sums.items()
                }
                logged["train/lr"] = scheduler.get_last_lr()[0]
                logged.update({f"val/{name}": value for name, value in metrics.items()})
                report.log_epoch(epoch, logged)
            state.epoch, state.step, state.sums = epoch + 1, 0, {}
            save_latest()
    finally:
        if report is not None:
            report.end()
    return {k: v for k, v in state.best.items() if k != "epoch"}
