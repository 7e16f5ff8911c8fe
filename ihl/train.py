"""Training stage: the paper's schedule, checkpoints that resume exactly, AMP and DDP.

Shaped like the torchvision references and DETR's ``main``, and read from the bottom up:
``train`` sets a run up (datasets, the folder lock, a ``Run`` from ``new_run``, resumed
by ``resumable_state``), ``fit`` runs its epochs, ``train_one_epoch`` one of them; the
``Run`` holds the step's module, what optimises it, where training is (``TrainState``)
and writes its checkpoints. Validation reuses ``ihl.evaluate``.

A resumed run ends with the weights of an uninterrupted one because nothing the
loop consumes depends on history that latest.pt does not hold: a sample's
augmentation depends only on (seed, epoch, index) (the datasets seed it so), an
epoch's order only on (seed, epoch) (DistributedSampler seeds its own
torch.Generator with seed + epoch), and the checkpoint carries the weights, the
flow, optimizer, schedule, scaler, RNG states and the position inside the epoch.

Across ranks: every rank validates a shard of the validation set (rank 0 scores
the gathered predictions), every collective has an explicit timeout
(``ihl.distributed``), a non-finite loss on any rank stops all of them, and a
run resumes only with the world size that wrote its latest.pt. On the GPU's
critical path there is no per-step host read (the loss terms are read every
``READ_EVERY`` steps) and no checkpoint write (a background thread writes it).
With ``train.compile`` the step (model and loss) is compiled in place before DDP
wraps it (``build_step``); checkpoints and validation use the same plain modules.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import threading
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
from ihl.checkpoint import CheckpointError, init_from, safe_load, save_model
from ihl.config import Config
from ihl.data.build import build_train_dataset, build_val_dataset, worker_init
from ihl.data.device_decode import batch_images, collate
from ihl.data.errors import DatasetError
from ihl.data.transforms import heatmaps_from_marginals
from ihl.device import autocast_dtype, num_workers, resolve_device
from ihl.distributed import Distributed, build_on_main, process_group, shard
from ihl.evaluate import gather_and_score, predict_dataset
from ihl.files import folder_lock, remove_temporaries, torch_save
from ihl.losses import build_loss
from ihl.models import build_model
from ihl.sources import fingerprint

log = logging.getLogger(__name__)

STATE_FORMAT = "ihl-train-state/1"
TARGET_KEYS = ("coords", "weights", "heatmap_x", "heatmap_y")
READ_EVERY = 50
"""Steps between reads of the loss terms: each read waits for the GPU to finish."""
EXECUTION_ONLY = frozenset({"train.compile", "train.compile_mode", "train.compile_backend"})
"""Config keys that change how a step runs and not what it computes: a run may resume with
other values (eager after a compiler failure, say)."""
TRAINING_CODE = ("ihl.train", "ihl.edge.params", "ihl.edge.live")
"""The modules the train stage runs (``ihl train``'s training, its params.yaml layering and its
DVCLive log): the source of their import closure is part of what a resume must match."""


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


def build_step(cfg: Config, device: torch.device) -> TrainStep:
    """The engine's training step for ``cfg`` on ``device``: a fresh model and loss in the
    config's layout and precision, compiled when ``train.compile`` is on.

    The compile is in place (``nn.Module.compile``) and comes before any DDP wrapping, as
    PyTorch's guide to where to apply it advises: the step's modules keep their state_dict
    keys (no ``_orig_mod.`` prefix), so checkpoints are those of an eager run, and
    ``step.model`` called directly (validation) runs eager. Nothing is compiled until the
    first step.
    """
    model = build_model(cfg.model).to(device)
    criterion = build_loss(cfg.model.head, cfg.loss).to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(cfg.train.amp, device)
    if cfg.train.amp != "off" and amp_dtype is None:
        log.warning(
            "train.amp %s is not used on this %s (%s); training in float32",
            cfg.train.amp,
            device.type,
            "fp16 is for CUDA" if cfg.train.amp == "fp16" else "no bf16 instructions",
        )
    step = TrainStep(model, criterion, amp_dtype)
    if cfg.train.compile:
        mode = cfg.train.compile_mode
        step.compile(backend=cfg.train.compile_backend, mode=None if mode == "default" else mode)
    return step


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's ``(epoch, index)`` pairs for ``state.epoch``, from ``state.step`` on.

    Read when iterated, so one loader with persistent workers serves every epoch:
    each index carries its epoch to the worker that augments it. The order is
    DistributedSampler's for (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, size: int, ddp: Distributed, seed: int, state: TrainState, batch: int):
        self.size, self.ddp, self.seed, self.state, self.batch = size, ddp, seed, state, batch

    def order(self, epoch: int, rank: int) -> list[int]:
        """Rank ``rank``'s sample indices of ``epoch``, in order."""
        sampler = DistributedSampler(
            range(self.size), self.ddp.world_size, rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.state.epoch, self.state.step * self.batch
        order = self.order(epoch, self.ddp.rank)
        return ((epoch, index) for index in itertools.islice(order, skip, None))

    def __len__(self) -> int:
        per_rank = math.ceil(self.size / self.ddp.world_size)
        return max(per_rank - self.state.step * self.batch, 0)


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
    pending_validation: bool = False
    """Epoch ``epoch`` - 1 ended and was saved but its validation has not finished: latest.pt
    is written before validating, so a failed validation repeats only itself."""


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
    """One loader for the whole run; each pass yields ``state.epoch`` from ``state.step`` on.

    Its workers persist across epochs (the epoch travels with each index), and
    their number follows the CPUs this process really has when ``num_workers`` is
    "auto". Its sampler (an ``EpochSampler``) names the samples of any step.
    """
    sampler = EpochSampler(len(dataset), ddp, cfg.train.seed, state, cfg.train.batch_size)
    workers = num_workers(cfg.train.num_workers, ddp.local_world_size)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=worker_init,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=workers > 0,
    )


def validate(
    model: nn.Module,
    cfg: Config,
    dataset: Dataset,
    ground_truth: Path,
    device: torch.device,
    progress: bool,
    ddp: Distributed,
) -> dict[str, float]:
    """Metrics of ``model`` on the validation set, each rank predicting one shard."""
    batch = cfg.train.batch_size
    indices = shard(len(dataset), ddp.rank, ddp.world_size, batch)
    predictions = predict_dataset(model, cfg, dataset, device, batch, progress, indices=indices)
    return gather_and_score(cfg, predictions, ground_truth, ddp)[0]


def sync_buffers(model: nn.Module, ddp: Distributed) -> None:
    """Rank 0's BatchNorm statistics on every rank. DDP runs with broadcast_buffers=False (no
    broadcast before every forward); once per epoch is enough, as they only matter for
    validation and the checkpoint, which holds rank 0's."""
    if ddp.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


class LossMeter:
    """Loss terms summed on the device and read every few steps, plus the first step of the
    epoch whose loss was not finite, which every rank learns at each read.

    Reading a tensor waits for the GPU; a read per step would keep it idle while the
    host prepares the next one.
    """

    def __init__(self, device: torch.device, step: int):
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.index = torch.tensor(step, device=device)
        self.first_bad = torch.tensor(-1, device=device)
        self.steps = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for key, value in terms.items():
            value = value.detach().to(torch.float64)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        bad = ~torch.isfinite(terms["loss"].detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, self.index, self.first_bad)
        self.index += 1
        self.steps += 1

    def read(self, ddp: Distributed) -> tuple[dict[str, float], list[int]]:
        """The sums since the last read, and per rank the first non-finite step (-1: none)."""
        names = sorted(self.sums)
        flags = torch.full((ddp.world_size,), -1, device=self.device)
        flags[ddp.rank] = self.first_bad
        if ddp.world_size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        values = torch.stack([self.sums[n] for n in names]).tolist() if names else []
        self.sums, self.steps = {}, 0
        return dict(zip(names, values, strict=True)), flags.tolist()


def key_metric(cfg: Config) -> str:
    return "PCKh" if cfg.data.dataset == "mpii" else "AP"


def is_better(metrics: dict[str, float], best: dict[str, float], key: str) -> bool:
    value = metrics.get(key, math.nan)
    return math.isfinite(value) and (not best or value > best[key])


def build_optimizer(
    params: Iterator[nn.Parameter], cfg: Config, world_size: int, iters_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with the paper's schedule, stepped once per iteration, from ``effective_lr`` (scaled
    to the global batch only with ``scale_lr``). The fused Adam kernel computes the same update
    in one pass: on two CPU cores the step of a ResNet-18 fell from 28 to 7 ms."""
    train_cfg = cfg.train
    optimizer = torch.optim.Adam(params, lr=config_mod.effective_lr(cfg, world_size), fused=True)
    schedule = PaperSchedule(
        iters_per_epoch,
        train_cfg.warmup_iters,
        train_cfg.warmup_ratio,
        tuple(train_cfg.lr_steps),
        train_cfg.lr_factor,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class CheckpointWriter:
    """Writes checkpoints from a background thread, one at a time.

    The training loop waits only for a copy of the state in host memory; the
    write (seconds on network storage) overlaps the next steps. A failed write
    is raised at the next save or at ``wait``.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def save(self, obj: dict[str, Any], path: Path) -> None:
        self.wait()
        snapshot = _to_host(obj)
        self.thread = threading.Thread(target=self._write, args=(snapshot, path), daemon=False)
        self.thread.start()

    def _write(self, obj: dict[str, Any], path: Path) -> None:
        try:
            torch_save(obj, path)
        except BaseException as err:  # raised in the training thread by wait()
            self.error = err

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _to_host(obj: Any) -> Any:
    """A copy of ``obj`` whose tensors are on the CPU and no longer shared with training."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _to_host(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_host(value) for value in obj)
    return obj


def check_resumable(
    ckpt: dict[str, Any],
    cfg: Config,
    data_fingerprint: str | None,
    path: Path,
    code_fingerprint: str | None = None,
) -> None:
    """Refuse to continue a training state written with another config, other data or other
    training code (``TRAINING_CODE``'s source): the result would be a model of neither. A key
    the state's config lacks (added to the config since) counts as its default; the
    ``EXECUTION_ONLY`` keys may change."""
    defaults = config_mod.flatten(config_mod.to_dict(Config()))
    saved = defaults | config_mod.flatten(ckpt.get("config") or {})
    current = config_mod.flatten(config_mod.to_dict(cfg))
    changed = sorted(
        k
        for k in saved.keys() | current.keys()
        if saved.get(k) != current.get(k) and k not in EXECUTION_ONLY
    )
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
    if ckpt.get("code_fingerprint") != code_fingerprint:
        raise CheckpointError(
            f"{path} was written by other training code (the source of "
            f"{', '.join(TRAINING_CODE)} and the ihl modules they import changed since: "
            f"fingerprint {ckpt.get('code_fingerprint')!r}, now {code_fingerprint!r}): resuming "
            "would continue the old code's weights with the new code. Delete it to train from "
            "scratch with this code"
        )


def finished(state: dict[str, Any], cfg: Config) -> bool:
    """Whether a saved ``TrainState`` has every epoch of ``cfg`` trained and validated."""
    return state["epoch"] >= cfg.train.epochs and not state["pending_validation"]


@dataclass
class Run:
    """One training run: the step's module (model and loss) and what optimises it, where
    training is (``state``), and the checkpoints it writes into ``out_dir`` (only the main
    process writes)."""

    cfg: Config
    ddp: Distributed
    device: torch.device
    iters_per_epoch: int
    module: TrainStep
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    out_dir: Path
    data_fingerprint: str | None
    code_fingerprint: str
    on_step: Callable[[int], None] | None = None
    state: TrainState = field(default_factory=TrainState)
    writer: CheckpointWriter = field(default_factory=CheckpointWriter)

    @property
    def latest_path(self) -> Path:
        return self.out_dir / "checkpoints" / "latest.pt"

    def parts(self) -> dict[str, Any]:
        """What a training state holds besides the position and the RNG states."""
        return {
            "model": self.module.model,
            "criterion": self.module.criterion,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a training state ``resumable_state`` accepted."""
        for name, part in self.parts().items():
            part.load_state_dict(ckpt[name])
        self.state = TrainState(**ckpt["state"])
        set_rng_state(ckpt["rng"])
        log.info(
            "resumed from %s at epoch %d, step %d",
            self.latest_path,
            self.state.epoch,
            self.state.step,
        )

    def save_latest(self) -> None:
        """latest.pt, written in the background; once on disk before ``on_step`` runs."""
        if not self.ddp.is_main:
            return
        latest = {
            "format": STATE_FORMAT,
            "config": config_mod.to_dict(self.cfg),
            "data_fingerprint": self.data_fingerprint,
            "code_fingerprint": self.code_fingerprint,
            "world_size": self.ddp.world_size,
            **{name: part.state_dict() for name, part in self.parts().items()},
            "state": vars(self.state),
            "rng": rng_state(),
        }
        self.writer.save(latest, self.latest_path)
        if self.on_step is not None:  # its contract: the step's checkpoint is on disk
            self.writer.wait()

    def add_losses(self, meter: LossMeter, loader: DataLoader, bar: tqdm) -> None:
        """Add the loss terms ``meter`` summed to the epoch's; stop every rank, naming the step
        and its samples, when one of them had a non-finite loss."""
        sums, bad = meter.read(self.ddp)
        for key, value in sums.items():
            self.state.sums[key] = self.state.sums.get(key, 0.0) + value
        for rank, index in enumerate(bad):
            if index >= 0:
                raise FloatingPointError(
                    f"loss is not finite at epoch {self.state.epoch + 1}, step {index + 1} on rank "
                    f"{rank} ({batch_samples(loader, self.state.epoch, rank, index)}); latest.pt "
                    "still holds the last good state"
                )
        if self.state.step:
            bar.set_postfix(
                loss=f"{self.state.sums.get('loss', math.nan) / self.state.step:.3f}",
                lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                refresh=False,
            )

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch just trained: BatchNorm statistics agreed, its loss means and lr,
        the state moved on (validation pending when the epoch is one to validate) and saved."""
        sync_buffers(self.module.model, self.ddp)
        sums, steps = self.state.sums, self.iters_per_epoch
        logged = {f"train/{name}": total / steps for name, total in sums.items()}
        logged["train/lr"] = self.scheduler.get_last_lr()[0]
        epochs = self.cfg.train.epochs
        self.state.epoch, self.state.step, self.state.sums = self.state.epoch + 1, 0, {}
        self.state.pending_validation = (
            self.state.epoch % self.cfg.train.val_interval == 0 or self.state.epoch == epochs
        )
        self.save_latest()
        return logged

    def validate(self, dataset: Dataset, ground_truth: Path, progress: bool) -> dict[str, float]:
        """Validate the epochs trained so far (``state.epoch``), keep best.pt, and final.pt after
        the last epoch; clear the pending mark and save. Returns val/<metric> values."""
        model, done = self.module.model, self.state.epoch
        metrics = validate(model, self.cfg, dataset, ground_truth, self.device, progress, self.ddp)
        folder = self.out_dir / "checkpoints"
        if is_better(metrics, self.state.best, key_metric(self.cfg)):
            self.state.best = {**metrics, "epoch": float(done)}
            if self.ddp.is_main:
                save_model(folder / "best.pt", model, self.cfg, epoch=done, metrics=metrics)
        if done == self.cfg.train.epochs and self.ddp.is_main:
            save_model(folder / "final.pt", model, self.cfg, epoch=done, metrics=metrics)
        self.state.pending_validation = False
        self.save_latest()
        return {f"val/{name}": value for name, value in metrics.items()}


def batch_samples(loader: DataLoader, epoch: int, rank: int, index: int) -> str:
    """The samples of batch ``index`` of ``epoch`` on ``rank``, as the dataset names them."""
    batch = loader.batch_size
    indices = loader.sampler.order(epoch, rank)[index * batch : (index + 1) * batch]
    return "samples " + ", ".join(loader.dataset.record(i) for i in indices)


def new_run(
    cfg: Config,
    out_dir: Path,
    ddp: Distributed,
    device: torch.device,
    iters_per_epoch: int,
    data_fingerprint: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Run:
    """A run at its start: the seed set, then a fresh step, optimizer, schedule and scaler."""
    seed_everything(cfg.train.seed)
    module = build_step(cfg, device)
    optimizer, scheduler = build_optimizer(
        module.parameters(), cfg, ddp.world_size, iters_per_epoch
    )
    scaler = torch.amp.GradScaler("cuda", enabled=module.amp_dtype is torch.float16)
    return Run(
        cfg, ddp, device, iters_per_epoch, module, optimizer, scheduler, scaler, out_dir,
        data_fingerprint, fingerprint(TRAINING_CODE), on_step,
    )  # fmt: skip


def resumable_state(run: Run, resume: bool | str) -> dict[str, Any] | None:
    """The training state to continue, or None to train from scratch.

    With ``resume`` a state of another world size, config, data or code is refused;
    with ``resume="matching"`` such a state, or a finished run, is trained over instead.
    """
    path = run.latest_path
    if not resume or not path.is_file():
        return None
    ckpt = safe_load(path)
    if ckpt.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a training state ({ckpt.get('format')!r})")
    written_by, world_size = ckpt.get("world_size", 1), run.ddp.world_size
    if written_by != world_size:
        raise CheckpointError(
            f"{path} was written by a run of {written_by} process(es) and this run has "
            f"{world_size}: the learning-rate schedule, the batches of each epoch and the "
            f"position in it depend on the world size. Resume with {written_by} process(es) "
            "(torchrun --nnodes x --nproc-per-node), or train into a new folder"
        )
    try:
        check_resumable(ckpt, run.cfg, run.data_fingerprint, path, run.code_fingerprint)
        if resume == "matching" and finished(ckpt["state"], run.cfg):
            raise CheckpointError(f"{path} holds a finished run: nothing to resume")
    except CheckpointError as err:
        if resume != "matching":
            raise
        log.warning("%s; training from scratch instead", err)
        return None
    return ckpt


def iterations_per_epoch(dataset: Dataset, cfg: Config, ddp: Distributed) -> int:
    """Optimisation steps in an epoch: whole batches of each rank's share (the last partial
    batch is dropped)."""
    steps = math.ceil(len(dataset) / ddp.world_size) // cfg.train.batch_size
    if steps == 0:
        raise DatasetError(
            f"{cfg.data.root}: {len(dataset)} training samples do not fill one batch of "
            f"{cfg.train.batch_size} per device"
        )
    return steps


def wrap_step(module: TrainStep, ddp: Distributed, device: torch.device) -> nn.Module:
    """The step's module as each rank runs it: DDP-wrapped across ranks (buffers synced once
    per epoch, ``sync_buffers``), itself in one process."""
    if ddp.world_size == 1:
        return module
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
        gradient_as_bucket_view=True,
    )


def train_one_epoch(run: Run, step_fn: nn.Module, loader: DataLoader, bar: tqdm) -> None:
    """One pass over ``loader`` (epoch ``run.state.epoch`` from step ``run.state.step`` on),
    saving latest.pt every ``checkpoint_interval_iters`` steps.

    The loss terms are read (one wait for the GPU) every ``READ_EVERY`` steps, before
    each save and at the end; a non-finite loss on any rank then stops every rank
    before anything is saved (``Run.add_losses``).
    """
    cfg, state, device = run.cfg, run.state, run.device
    interval = cfg.train.checkpoint_interval_iters
    meter = LossMeter(device, state.step)
    for batch in loader:
        images = batch_images(batch, cfg.model.input_size, device)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = {k: batch[k].to(device, non_blocking=True) for k in TARGET_KEYS if k in batch}
        if "heatmap_x" in targets:
            targets["heatmaps"] = heatmaps_from_marginals(
                targets.pop("heatmap_x"), targets.pop("heatmap_y")
            )
        terms = step_fn(images, targets)
        meter.add(terms)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(terms["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        state.step += 1
        state.iteration += 1
        bar.update()
        saving = bool(interval) and state.iteration % interval == 0
        if saving or meter.steps >= READ_EVERY:
            run.add_losses(meter, loader, bar)
        if saving:
            run.save_latest()
        if run.on_step is not None:
            run.on_step(state.iteration)
    run.add_losses(meter, loader, bar)


def fit(
    run: Run,
    step_fn: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    ground_truth: Path,
    report: EpochLog | None,
    show: bool,
) -> None:
    """The epochs left to ``run``, each trained, saved, validated when due and reported
    (epochs numbered from 0, as the log's steps are; checkpoints count epochs done)."""
    cfg, state, model, criterion = run.cfg, run.state, run.module.model, run.module.criterion
    loader = train_loader(train_set, cfg, run.ddp, state, run.device.type == "cuda")
    if state.pending_validation:  # the last epoch trained was saved but not validated
        logged = run.validate(val_set, ground_truth, show)
        if report is not None:
            report.log_epoch(state.epoch - 1, logged)
    while state.epoch < cfg.train.epochs:
        epoch = state.epoch
        if hasattr(criterion, "set_epoch"):
            criterion.set_epoch(epoch)
        model.train()
        with tqdm(
            total=run.iters_per_epoch,
            initial=state.step,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not show,
        ) as bar:
            train_one_epoch(run, step_fn, loader, bar)
        logged = run.end_epoch()
        if state.pending_validation:
            logged |= run.validate(val_set, ground_truth, show)
        if report is not None:
            report.log_epoch(epoch, logged)
    run.writer.wait()


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

    Writes ``checkpoints/latest.pt`` (full training state, at each epoch end, before
    validating, and every ``train.checkpoint_interval_iters`` steps),
    ``checkpoints/best.pt`` (model only, best validation AP or PCKh) and
    ``checkpoints/final.pt`` (the last epoch's model, which the reference scores), and
    reports each epoch to ``epoch_log`` (the command line passes
    ``ihl.edge.live.LiveLog``, DVCLive files under ``live/``); under torchrun only rank 0
    writes. With ``resume`` a run continues from latest.pt when there is one (so a
    restarted pod can always pass it), provided it was written with the same world
    size. ``on_step(iteration)`` is called after every optimisation step, once any
    checkpoint of that step is written. Datasets are checked before anything is
    written.

    ``resume="matching"`` resumes only an unfinished state of this config, data and code and
    otherwise trains from scratch (what ``dvc repro`` runs after a change of params or code).

    ``out_dir`` is locked for the run (``ihl.files.folder_lock``): a second run on the same
    folder fails at once instead of overwriting its checkpoints; temporary files a killed
    run left there are removed. ``data_fingerprint`` (``ihl prepare``'s) and a fingerprint of
    the training code (``TRAINING_CODE``) are saved with the training state, and a resume is
    refused unless the config and both fingerprints are those of the run that wrote latest.pt.
    """
    out_dir = Path(out_dir)
    with process_group(resolve_device(device)) as (ddp, dev), contextlib.ExitStack() as held:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        train_set = build_on_main(lambda: build_train_dataset(cfg), ddp)
        val_set, ground_truth = build_on_main(lambda: build_val_dataset(cfg), ddp)
        iters_per_epoch = iterations_per_epoch(train_set, cfg, ddp)
        if ddp.is_main:
            held.enter_context(folder_lock(out_dir))
            for path in remove_temporaries(out_dir / "checkpoints"):
                log.info("removed %s, left by a run killed while writing it", path)

        run = new_run(cfg, out_dir, ddp, dev, iters_per_epoch, data_fingerprint, on_step)
        saved = resumable_state(run, resume)
        if saved is not None:
            run.restore(saved)
        elif cfg.train.init_from:
            init_from(cfg.train.init_from, run.module.model, run.module.criterion)
            log.info("starting from the weights of %s", cfg.train.init_from)
        step_fn = wrap_step(run.module, ddp, dev)
        report = epoch_log if ddp.is_main else None
        if report is not None:
            report.start(config_mod.to_dict(cfg), saved is not None, run.state.epoch)
        try:
            fit(run, step_fn, train_set, val_set, ground_truth, report, progress and ddp.is_main)
        finally:
            if report is not None:
                report.end()
        return {k: v for k, v in run.state.best.items() if k != "epoch"}
