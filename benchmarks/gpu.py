"""GPU throughput through the training code itself: steps, loader, evaluation, memory.

Four tables, on a generated COCO-layout set (640x480 JPEGs, so decode costs are
realistic) in a temporary folder:

1. training step: images/s and peak memory of the engine's step
   (``ihl.train.build_step``) plus Adam, ResNet-50 and HRNet-W32 at 256x192, in
   fp32 (TF32 on), bf16, bf16 + channels-last and bf16 + channels-last +
   ``train.compile`` (inductor), timed by benchmarks/train.py's
   ``images_per_second``; batches already on the GPU, so these are the model's
   ceiling. ``1st s``: the first step, the compile included.
2. loader: samples/s of the engine's training loader with N workers (decode,
   augmentation, warp and targets), no GPU work; with ``data.decode: device`` the
   workers only read files and the batch is decoded (nvJPEG) and warped on the GPU,
   which the rate includes.
3. end to end: the engine's ``train_one_epoch`` with its loader, ResNet-50 bf16
   + channels-last, decoding on the CPU and on the GPU: what a run sees.
4. evaluation: crops/s of ``predict_dataset`` (flip test) with N workers, in fp32, bf16
   and fp16 (``--precision``).

``--smoke`` runs every piece on the CPU in seconds (the sample preset, tiny
crops, a handful of steps, the aot_eager compile backend), so the script is
known to work before a GPU is lent; its numbers mean nothing. benchmarks/gpu.sh
runs the full version.

    uv run python benchmarks/gpu.py [--smoke] [--steps 30] [--workers 8 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm
from train import images_per_second, sync  # benchmarks/train.py: the script's own folder

from ihl import config
from ihl.config import Config
from ihl.data.build import build_train_dataset, build_val_dataset
from ihl.data.device_decode import batch_images
from ihl.data.synth import make_coco_synth
from ihl.data.transforms import heatmaps_from_marginals
from ihl.device import available_cpus, driver_version
from ihl.distributed import Distributed as Single
from ihl.evaluate import predict_dataset
from ihl.inference import PRECISIONS
from ihl.models import build_model
from ihl.train import (
    TARGET_KEYS,
    TrainState,
    new_run,
    train_loader,
    train_one_epoch,
)

MODES = {
    "fp32/TF32": {"train.amp": "off", "train.channels_last": False},
    "bf16": {"train.amp": "bf16", "train.channels_last": False},
    "bf16+NHWC": {"train.amp": "bf16", "train.channels_last": True},
    "bf16+NHWC+compile": {"train.amp": "bf16", "train.channels_last": True, "train.compile": True},
}
FULL = {"presets": ("coco_res50", "coco_hrnet_w32"), "input": [192, 256], "batch": 64}
SMOKE = {"presets": ("sample",), "input": [64, 64], "batch": 4, "compile_backend": "aot_eager"}
"""The smoke run compiles with aot_eager: the same tracing in seconds, where inductor's code
generation takes minutes on a small CPU."""


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
            "train.compile_backend": size.get("compile_backend", "inductor"),
        }
        | overrides,
    )


def first_batch(cfg: Config, device: torch.device) -> tuple[torch.Tensor, dict]:
    """One real batch of the training loader, on the device, targets as the step gets them."""
    loader = train_loader(build_train_dataset(cfg), cfg, Single(), TrainState(), False)
    batch = next(iter(loader))
    images = batch["image"].to(device)
    targets = {k: batch[k].to(device) for k in TARGET_KEYS if k in batch}
    if "heatmap_x" in targets:
        targets["heatmaps"] = heatmaps_from_marginals(
            targets.pop("heatmap_x"), targets.pop("heatmap_y")
        )
    return images, targets


def loader_rate(cfg: Config, workers: int, batches: int, device: torch.device) -> float:
    """Samples/s of the engine's training loader alone, plus the decode and warp on
    ``device`` when the config leaves them to it (``data.decode: device``)."""
    cfg = cfg.model_copy(deep=True)
    cfg.train.num_workers = workers
    loader = train_loader(build_train_dataset(cfg), cfg, Single(), TrainState(), False)
    it = iter(loader)
    batch_images(next(it), cfg.model.input_size, device)  # workers started and warm
    sync(device)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        try:
            count += len(batch_images(next(it), cfg.model.input_size, device))
        except StopIteration:
            break
    sync(device)
    return count / (time.perf_counter() - start)


def end_to_end_rate(cfg: Config, device: torch.device, workers: int, steps: int) -> float:
    """Images/s of train_one_epoch (loader, transfer, step, bookkeeping) for ``steps`` steps."""
    cfg = cfg.model_copy(deep=True)
    cfg.train.num_workers = workers
    cfg.train.checkpoint_interval_iters = 0
    dataset = build_train_dataset(cfg)
    done = {"start": None, "timed": 0}

    def on_step(iteration: int) -> None:
        if iteration == 3:
            sync(device)
            done["start"] = time.perf_counter()
        elif iteration > 3:
            done["timed"] += 1
        if iteration >= steps + 3:
            raise StopIteration

    with tempfile.TemporaryDirectory() as out:
        run = new_run(cfg, Path(out), Single(), device, 10**6, on_step=on_step)
        loader = train_loader(dataset, cfg, Single(), run.state, device.type == "cuda")
        try:
            while True:
                with tqdm(disable=True) as bar:
                    train_one_epoch(run, run.module, loader, bar)
                run.state.epoch, run.state.step = run.state.epoch + 1, 0
        except StopIteration:
            pass
    sync(device)
    return done["timed"] * cfg.train.batch_size / (time.perf_counter() - done["start"])


def eval_rate(cfg: Config, device: torch.device, workers: int, precision: str) -> tuple[float, int]:
    """Crops/s of predict_dataset with the flip test over the validation boxes, the forward
    in ``precision`` (``ihl evaluate --precision``)."""
    dataset, _ = build_val_dataset(cfg)
    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    args = (model, cfg, dataset, device, cfg.train.batch_size, False)
    predict_dataset(*args, num_workers=workers, precision=precision)
    sync(device)
    start = time.perf_counter()
    predict_dataset(*args, num_workers=workers, precision=precision)
    sync(device)
    return len(dataset) / (time.perf_counter() - start), len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every piece")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per step row")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader workers")
    parser.add_argument("--images", type=int, default=400, help="generated training images")
    args = parser.parse_args()

    size = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke else "cuda")
    steps = 2 if args.smoke else args.steps
    cpus = available_cpus()
    workers = args.workers or ([0, 1] if args.smoke else sorted({4, 8, max(cpus - 2, 1)}))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        gpu = f"{torch.cuda.get_device_name(device)}, driver {driver_version()}"
    else:
        gpu = "none (CPU smoke run: numbers mean nothing)"
    print(f"{time.strftime('%Y-%m-%d')}  GPU {gpu}; torch {torch.__version__}; {cpus} CPUs")

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "coco"
        image_size = (96, 128) if args.smoke else (640, 480)
        num_train = 8 if args.smoke else args.images
        make_coco_synth(data, num_train=num_train, num_val=num_train // 4, image_size=image_size)

        print("\n1. training step (batch on the GPU), images/s")
        header = (
            f"{'preset':<16} {'mode':<18} {'batch':>5} {'img/s':>9} {'peak GiB':>9} {'1st s':>7}"
        )
        print(header + "\n" + "-" * len(header))
        for preset in size["presets"]:
            for mode, overrides in MODES.items():
                cfg = load_cfg(preset, data, size, overrides)
                reset_peak(device)
                rate, _, first = images_per_second(cfg, device, steps, first_batch)
                print(
                    f"{preset:<16} {mode:<18} {cfg.train.batch_size:>5} {rate:>9.1f} "
                    f"{peak_gib(device):>9.2f} {first:>7.1f}",
                    flush=True,
                )

        decoded = {
            d: load_cfg(size["presets"][0], data, size, MODES["bf16+NHWC"] | {"data.decode": d})
            for d in ("cpu", "device")
        }
        print("\n2. training loader alone, samples/s (decode: where images are decoded)")
        print(f"{'workers':>7} {'decode':>7} {'samples/s':>10} {'per worker':>11}")
        for n in workers:
            for decode, decode_cfg in decoded.items():
                rate = loader_rate(decode_cfg, n, 4 if args.smoke else 100, device)
                print(f"{n:>7} {decode:>7} {rate:>10.1f} {rate / max(n, 1):>11.1f}", flush=True)

        print(f"\n3. end to end ({size['presets'][0]}, bf16+NHWC), images/s")
        print(f"{'workers':>7} {'decode':>7} {'img/s':>9} {'peak GiB':>9}")
        for n in workers:
            for decode, decode_cfg in decoded.items():
                reset_peak(device)
                rate = end_to_end_rate(decode_cfg, device, n, steps)
                print(f"{n:>7} {decode:>7} {rate:>9.1f} {peak_gib(device):>9.2f}", flush=True)

        print("\n4. evaluation with flip test (detector boxes), crops/s")
        print(
            f"{'preset':<16} {'precision':>9} {'workers':>7} {'crops':>6} {'crops/s':>9} "
            f"{'peak GiB':>9}"
        )
        for preset in size["presets"]:
            eval_cfg = load_cfg(preset, data, size, MODES["fp32/TF32"])
            for precision in ("fp32", "bf16") if args.smoke else PRECISIONS:
                reset_peak(device)
                rate, crops = eval_rate(eval_cfg, device, workers[-1], precision)
                print(
                    f"{preset:<16} {precision:>9} {workers[-1]:>7} {crops:>6} {rate:>9.1f} "
                    f"{peak_gib(device):>9.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
