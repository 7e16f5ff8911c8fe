"""Training throughput: images per second of one optimisation step, per precision and layout.

Times exactly what ``ihl.train.train`` runs per batch (``TrainStep``: forward,
IHL loss with its flow, backward, Adam, the GradScaler under fp16) on batches
already in device memory, so the numbers are the model's ceiling; the loader's
is in benchmarks/data.py. Rows: the ``sample`` preset on CPU in fp32 and bf16, each with
and without channels-last, any ``--variant`` of it (overrides as ``ihl train --set`` takes
them, separated by ``;``), and on CUDA (when present) ResNet-50 and HRNet-W32 at 256x192
in fp32, bf16 and fp16, each with and without channels-last. ``1st s`` is the first
step, which compiles the step under ``--variant train.compile=true`` (timed steps
follow three untimed ones). Compare rows of one run: on a shared machine only their
ratios mean something. benchmarks/gpu.py times its steps with ``images_per_second``.

    uv run python benchmarks/train.py [--steps 10] [--cpu-only]
        [--variant "model.input_size=[96, 128]"] [--variant "train.batch_size=32;train.lr=4e-3"]
        [--variant "train.compile=true"]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from ihl import config
from ihl.cli.common import parse_overrides
from ihl.config import Config
from ihl.train import build_optimizer, build_step

CUDA_PRESETS = ("coco_res50", "coco_hrnet_w32")
AMP = ("off", "bf16", "fp16")


def batch(cfg: Config, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    b, (w, h), (mw, mh) = cfg.train.batch_size, cfg.model.input_size, cfg.model.heatmap_size
    k = cfg.model.num_joints
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, device=device)
    targets = {
        "coords": torch.rand(b, k, 2, device=device) * 0.8 + 0.1,
        "weights": torch.ones(b, k, device=device),
        "heatmaps": torch.rand(b, k, mh, mw, device=device),
    }
    return images, targets


def parse_variant(text: str) -> dict:
    """``a.b=1;c.d=[2, 3]`` as overrides: each pair read as ``ihl train --set`` reads it."""
    return parse_overrides([part.strip() for part in text.split(";") if part.strip()])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(
    cfg: Config,
    device: torch.device,
    steps: int,
    make_batch: Callable[[Config, torch.device], tuple[torch.Tensor, dict]] = batch,
) -> tuple[float, torch.dtype | None, float]:
    """Training images per second of the engine's step (``ihl.train.build_step``, so compiled
    when ``train.compile`` is on) on one device-resident batch of ``make_batch``; also the
    autocast dtype the steps really ran in and the seconds of the first step (the compile)."""
    torch.manual_seed(0)
    step = build_step(cfg, device)
    optimizer, _ = build_optimizer(step.parameters(), cfg, 1, iters_per_epoch=1)
    scaler = torch.amp.GradScaler(device.type, enabled=step.amp_dtype is torch.float16)
    images, targets = make_batch(cfg, device)
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def one() -> None:
        loss = step(images, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    start = time.perf_counter()
    one()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(2):
        one()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    return steps * cfg.train.batch_size / (time.perf_counter() - start), step.amp_dtype, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA rows")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="another CPU row of the sample preset: key=value overrides separated by ';'",
    )
    args = parser.parse_args()

    cpu = torch.device("cpu")
    rows = [
        ("sample", cpu, {"train.amp": amp, "train.channels_last": channels_last})
        for amp in ("off", "bf16")
        for channels_last in (False, True)
    ]
    rows += [("sample", cpu, parse_variant(text)) for text in args.variant]
    if torch.cuda.is_available() and not args.cpu_only:
        rows += [
            (name, torch.device("cuda"), {"train.amp": amp, "train.channels_last": channels_last})
            for name in CUDA_PRESETS
            for amp in AMP
            for channels_last in (False, True)
        ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = (
        f"{'preset':<16} {'device':<6} {'input':>7} {'batch':>5} {'amp':<4} {'NHWC':<5} "
        f"{'img/s':>8} {'1st s':>6}  overrides"
    )
    print(header)
    print("-" * len(header))
    for name, device, overrides in rows:
        cfg = config.load(name, {"model.pretrained": False} | overrides)
        rate, dtype, first = images_per_second(cfg, device, args.steps)
        w, h = cfg.model.input_size
        amp = cfg.train.amp if dtype else "off"
        nhwc = "yes" if cfg.train.channels_last else "no"
        print(
            f"{name:<16} {device.type:<6} {f'{w}x{h}':>7} {cfg.train.batch_size:>5} "
            f"{amp:<4} {nhwc:<5} {rate:>8.1f} {first:>6.1f}  "
            + "; ".join(f"{k}={v}" for k, v in overrides.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
