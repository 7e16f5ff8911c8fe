"""GPU throughput through the training code itself: steps, loader, evaluation, memory.

Five tables, on a generated COCO-layout set (640x480 JPEGs, so decode costs are
realistic) in a temporary folder, in the order of what they are worth when time runs
out:

1. training step, eager: images/s and peak memory of the engine's step
   (``ihl.train.build_step``: model, IHL loss with its Sinkhorn term, backward) plus Adam,
   ResNet-50 and HRNet-W32 at 256x192, in bf16 + channels-last, fp32 and bf16, timed by
   benchmarks/train.py's ``images_per_second``; batches already on the GPU, so these are
   the model's ceiling. fp32 is what ``ihl train`` runs: torch's defaults, which the
   header line names (cuDNN convolutions in TF32, matrix products in full fp32).
2. end to end: the engine's ``train_one_epoch`` with its loader, ResNet-50 bf16 +
   channels-last, decoding on the CPU and on the GPU: what a run sees.
3. loader alone: samples/s of the engine's training loader with N workers (decode,
   augmentation, warp and targets), no GPU work; with ``data.decode: device`` the
   workers only read files and the batch is decoded (nvJPEG) and warped on the GPU,
   which the rate includes. ``cpu files``: files of a device row decoded on the CPU.
4. evaluation: crops/s of ``predict_dataset`` (flip test) with N workers, in fp32, bf16
   and fp16 (``--precision``), the loader's start left out (a short run's time is
   subtracted from a long one's).
5. training step, compiled (``train.compile``, inductor): ``1st s`` is the compile.

The generated sets are repeated (``Repeated``) so that every row measures a steady state,
not a loader's start or end; more generated images would only cost time (~0.1 s each).
Each row is printed when it finishes and appended to ``--out``; a row that fails prints
its error and the next one runs.

``--smoke`` runs every row on the CPU in a few minutes (the sample preset with the Sinkhorn
term, tiny crops, a handful of steps, the aot_eager compile backend), so the script is
known to work before a GPU is lent; its numbers mean nothing. benchmarks/gpu.sh runs
the full version.

    python benchmarks/gpu.py [--smoke] [--steps 30] [--workers 4 8 14] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm import tqdm
from train import images_per_second, sync  # benchmarks/train.py: the script's own folder

from ihl import config
from ihl.config import Config
from ihl.data.build import build_train_dataset, build_val_dataset
from ihl.data.device_decode import DECODED, batch_images
from ihl.data.synth import make_coco_synth
from ihl.data.transforms import heatmaps_from_marginals
from ihl.device import available_cpus, driver_version
from ihl.distributed import Distributed as Single
from ihl.evaluate import predict_dataset
from ihl.inference import PRECISIONS
from ihl.models import build_model
from ihl.train import TARGET_KEYS, TrainState, new_run, train_loader, train_one_epoch

MODES = {
    "bf16+NHWC": {"train.amp": "bf16", "train.channels_last": True},
    "fp32": {"train.amp": "off", "train.channels_last": False},
    "bf16": {"train.amp": "bf16", "train.channels_last": False},
    "bf16+NHWC+compile": {"train.amp": "bf16", "train.channels_last": True, "train.compile": True},
}
FULL = {"presets": ("coco_res50", "coco_hrnet_w32"), "input": [192, 256], "batch": 64}
SMOKE = {
    "presets": ("sample",),
    "input": [64, 64],
    "batch": 4,
    "overrides": {
        "model.backbone": "resnet18",
        "model.deconv_channels": 32,
        "train.compile_backend": "aot_eager",
        "loss.wasserstein": "sinkhorn",
    },
}
"""The smoke run compiles with aot_eager: the same tracing in seconds, where inductor's code
generation takes minutes on a small CPU. It trains with the Sinkhorn term, as the COCO
presets of the full run do, on a small ResNet-18."""
WARM_STEPS = 3
TABLES = {
    "step": (
        "1. training step, eager (batch on the GPU), images/s",
        f"{'preset':<16} {'mode':<18} {'batch':>5} {'img/s':>9} {'peak GiB':>9} {'1st s':>7}",
    ),
    "end": (
        "2. end to end (ResNet-50 or the smoke preset, bf16+NHWC), images/s",
        f"{'workers':>7} {'decode':>7} {'img/s':>9} {'peak GiB':>9} {'cpu files':>9}",
    ),
    "loader": (
        "3. training loader alone, samples/s (decode: where images are decoded)",
        f"{'workers':>7} {'decode':>7} {'samples/s':>10} {'per worker':>11} {'cpu files':>9}",
    ),
    "eval": (
        "4. evaluation with flip test (detector boxes), crops/s, loader start left out",
        f"{'preset':<16} {'precision':>9} {'workers':>7} {'crops':>6} {'crops/s':>9} "
        f"{'peak GiB':>9}",
    ),
    "compile": (
        "5. training step, compiled (1st s: the compile)",
        f"{'preset':<16} {'mode':<18} {'batch':>5} {'img/s':>9} {'peak GiB':>9} {'1st s':>7}",
    ),
}
Row = tuple[str, str, Callable[[], str]]
"""(table, the row's first columns, a function measuring it that returns the rest)."""


class Repeated(Dataset):
    """``dataset`` repeated up to at least ``size`` samples, so a loader runs long enough to
    reach its steady rate; indices are those of the training sampler (``(epoch, index)``)
    or plain ones, and other attributes are the dataset's."""

    def __init__(self, dataset: Dataset, size: int):
        self.dataset, self.times = dataset, max(1, math.ceil(size / len(dataset)))

    def __len__(self) -> int:
        return self.times * len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            return self.dataset[key[0], key[1] % len(self.dataset)]
        return self.dataset[key % len(self.dataset)]

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Done(Exception):
    """Raised from ``on_step`` when the timed steps of an end-to-end row are done."""


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def load_cfg(preset: str, data: Path, size: dict, overrides: dict) -> Config:
    return config.load(
        preset,
        {
            "model.pretrained": False,
            "model.input_size": size["input"],
            "train.batch_size": size["batch"],
            "data.root": str(data),
            "train.compile_backend": "inductor",
        }
        | size.get("overrides", {})
        | overrides,
    )


def with_workers(cfg: Config, workers: int) -> Config:
    cfg = cfg.model_copy(deep=True)
    cfg.train.num_workers = workers
    return cfg


def in_flight(cfg: Config, workers: int) -> int:
    """Samples a loader has asked its workers for ahead of the batch in hand."""
    return (2 * workers + 1) * cfg.train.batch_size


def first_batch(cfg: Config, device: torch.device) -> tuple[torch.Tensor, dict]:
    """One real batch of the training loader, on the device, targets as the step gets them."""
    cfg = with_workers(cfg, 0)
    loader = train_loader(build_train_dataset(cfg), cfg, Single(), TrainState(), False)
    batch = next(iter(loader))
    images = batch_images(batch, cfg.model.input_size, device)
    targets = {k: batch[k].to(device) for k in TARGET_KEYS if k in batch}
    if "heatmap_x" in targets:
        targets["heatmaps"] = heatmaps_from_marginals(
            targets.pop("heatmap_x"), targets.pop("heatmap_y")
        )
    return images, targets


def step_row(cfg: Config, device: torch.device, steps: int) -> str:
    reset_peak(device)
    rate, _, first = images_per_second(cfg, device, steps, first_batch)
    return f"{cfg.train.batch_size:>5} {rate:>9.1f} {peak_gib(device):>9.2f} {first:>7.1f}"


def loader_row(cfg: Config, workers: int, batches: int, device: torch.device) -> str:
    """Samples/s of the engine's training loader alone, plus the decode and warp on
    ``device`` when the config leaves them to it (``data.decode: device``)."""
    cfg = with_workers(cfg, workers)
    size = (batches + 1) * cfg.train.batch_size + in_flight(cfg, workers)
    dataset = Repeated(build_train_dataset(cfg), size)
    loader = train_loader(dataset, cfg, Single(), TrainState(), device.type == "cuda")
    it = iter(loader)
    batch_images(next(it), cfg.model.input_size, device)  # workers started and warm
    sync(device)
    cpu_files = DECODED["cpu"]
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(batch_images(next(it), cfg.model.input_size, device))
    sync(device)
    rate = count / (time.perf_counter() - start)
    cpu_files = DECODED["cpu"] - cpu_files if cfg.data.decode == "device" else 0
    return f"{rate:>10.1f} {rate / max(workers, 1):>11.1f} {cpu_files:>9}"


def end_to_end_row(cfg: Config, device: torch.device, workers: int, steps: int) -> str:
    """Images/s of train_one_epoch (loader, transfer, step, bookkeeping) over ``steps``
    steps after ``WARM_STEPS``, all inside one epoch of a repeated set."""
    cfg = with_workers(cfg, workers)
    cfg.train.checkpoint_interval_iters = 0
    reset_peak(device)
    size = (WARM_STEPS + steps) * cfg.train.batch_size + in_flight(cfg, workers)
    times, cpu_files = [], DECODED["cpu"]

    def on_step(iteration: int) -> None:
        if iteration in (WARM_STEPS, WARM_STEPS + steps):
            sync(device)
            times.append(time.perf_counter())
        if len(times) == 2:
            raise Done

    with tempfile.TemporaryDirectory() as out:
        run = new_run(cfg, Path(out), Single(), device, 10**6, on_step=on_step)
        loader = train_loader(
            Repeated(build_train_dataset(cfg), size), cfg, Single(), run.state,
            device.type == "cuda",
        )  # fmt: skip
        try:
            with tqdm(disable=True) as bar:
                train_one_epoch(run, run.module, loader, bar)
            raise RuntimeError(
                f"the epoch ended after {run.state.step} steps, before the timed ones"
            )
        except Done:
            pass
    rate = steps * cfg.train.batch_size / (times[1] - times[0])
    cpu_files = DECODED["cpu"] - cpu_files if cfg.data.decode == "device" else 0
    return f"{rate:>9.1f} {peak_gib(device):>9.2f} {cpu_files:>9}"


def eval_row(
    cfg: Config, device: torch.device, workers: int, precision: str, batches: tuple[int, int]
) -> str:
    """Crops/s of predict_dataset with the flip test over the validation boxes (repeated),
    the forward in ``precision`` (``ihl evaluate --precision``). Each call starts its own
    loader, so the time of a short call (``batches[0]`` batches) is subtracted from a long
    one's (``batches[1]``)."""
    reset_peak(device)
    short = batches[0] * cfg.train.batch_size
    dataset, _ = build_val_dataset(cfg)
    dataset = Repeated(dataset, batches[1] * cfg.train.batch_size)
    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)

    def seconds(indices: range) -> float:
        sync(device)
        start = time.perf_counter()
        predict_dataset(
            model, cfg, dataset, device, cfg.train.batch_size, False,
            num_workers=workers, indices=indices, precision=precision,
        )  # fmt: skip
        sync(device)
        return time.perf_counter() - start

    seconds(range(short))  # cuDNN's algorithm search for these shapes
    crops = len(dataset) - short
    rate = crops / (seconds(range(len(dataset))) - seconds(range(short)))
    return f"{workers:>7} {crops:>6} {rate:>9.1f} {peak_gib(device):>9.2f}"


def rows(data: Path, size: dict, device: torch.device, args: argparse.Namespace) -> Iterator[Row]:
    """Every row in the order it runs (the module's docstring); each loads its config when
    it runs, so that nothing of one row can fail another."""
    smoke = device.type == "cpu"
    steps = 2 if smoke else args.steps
    workers = args.workers or ([0, 1] if smoke else sorted({4, 8, max(available_cpus() - 2, 1)}))
    presets = size["presets"]

    def cfg(preset: str, mode: str, decode: str = "cpu") -> Config:
        return load_cfg(preset, data, size, MODES[mode] | {"data.decode": decode})

    def step(preset: str, mode: str) -> str:
        return step_row(cfg(preset, mode), device, steps)

    def end(decode: str, n: int) -> str:
        return end_to_end_row(cfg(presets[0], "bf16+NHWC", decode), device, n, steps)

    def loader(decode: str, n: int) -> str:
        return loader_row(cfg(presets[0], "bf16+NHWC", decode), n, 4 if smoke else 100, device)

    def evaluation(preset: str, precision: str) -> str:
        batches = (1, 3) if smoke else (3, 30)
        return eval_row(cfg(preset, "fp32"), device, workers[-1], precision, batches)

    for mode in ("bf16+NHWC", "fp32", "bf16"):
        for p in presets:
            yield "step", f"{p:<16} {mode:<18}", partial(step, p, mode)
    for n in (workers[0], workers[-1]):
        for d in ("cpu", "device"):
            yield "end", f"{n:>7} {d:>7}", partial(end, d, n)
    for n in workers:
        for d in ("cpu", "device"):
            yield "loader", f"{n:>7} {d:>7}", partial(loader, d, n)
    for p in presets:
        for precision in ("fp32", "bf16") if smoke else PRECISIONS:
            yield "eval", f"{p:<16} {precision:>9}", partial(evaluation, p, precision)
    for p in presets:
        yield "compile", f"{p:<16} {'bf16+NHWC+compile':<18}", partial(step, p, "bf16+NHWC+compile")


def report(lines: Iterator[Row], out: Path) -> int:
    """Measure each row, print it and append it to ``out`` as it finishes; a row that fails
    is printed with its error and the next one runs. Returns the number of failed rows."""
    table, failed = None, 0
    for name, label, measure in lines:
        text = ""
        if name != table:
            table = name
            title, header = TABLES[name]
            text = f"\n{title}\n{header}\n{'-' * len(header)}\n"
        try:
            text += f"{label} {measure()}"
        except Exception as err:  # one row failing must not lose the others
            traceback.print_exc()
            text += f"{label} failed: {type(err).__name__}: {str(err).splitlines()[0]}"
            failed += 1
        print(text, flush=True)
        with out.open("a") as f:
            f.write(text + "\n")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every row")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per step row")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader workers")
    parser.add_argument(
        "--images", type=int, default=100, help="generated training images (repeated as needed)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu-results.txt"), help="file the rows are added to"
    )
    args = parser.parse_args()

    size = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as ihl train sets it; TF32 left as it runs
        gpu = f"{torch.cuda.get_device_name(device)}, driver {driver_version()}"
    else:
        gpu = "none (CPU smoke run: numbers mean nothing)"
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')}  GPU {gpu}; torch {torch.__version__}; "
        f"{available_cpus()} CPUs; TF32: cuDNN convolutions {torch.backends.cudnn.allow_tf32}, "
        f"matrix products {torch.backends.cuda.matmul.allow_tf32}"
    )
    print(header, flush=True)
    with args.out.open("a") as f:
        f.write(f"\n{header}\n")

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "coco"
        image_size = (96, 128) if args.smoke else (640, 480)
        num_train = 8 if args.smoke else args.images
        make_coco_synth(data, num_train=num_train, num_val=num_train // 4, image_size=image_size)
        failed = report(rows(data, size, device, args), args.out)
    if failed:
        raise SystemExit(f"{failed} row(s) failed; the others are in {args.out}")


if __name__ == "__main__":
    main()
