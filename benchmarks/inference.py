"""Pose inference throughput on the CPU: eager PyTorch against ONNX Runtime.

Crops per second through ``predict_crops`` (the flip test included where the preset
uses it) for the ``sample`` model and the paper's ResNet-50 and HRNet-W32 models,
random weights (speed does not depend on them), at batch 1, 8 and 32. Runtimes
alternate round by round and each cell is the median round, so the ratios come
from one run under the same load. ``--compile`` adds ``torch.compile`` (slow to
compile on the CPU).

    uv run python benchmarks/inference.py [--presets sample coco_res50 coco_hrnet_w32]
        [--batches 1 8 32] [--rounds 3] [--seconds 1.5] [--compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from ihl import config
from ihl.data.keypoints import get_spec
from ihl.inference import predict_crops
from ihl.models.pose import build_model
from ihl.runtime import OnnxPoseModel, export_onnx


def crops_per_second(model, images, test, flip, seconds: float) -> float:
    """Run whole batches for at least ``seconds`` (two batches at least)."""
    done, start = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < seconds:
        predict_crops(model, images, test, flip)
        done += 1
    return done * len(images) / (time.perf_counter() - start)


def bench_preset(name: str, batches, rounds: int, seconds: float, compile_: bool, tmp: Path):
    cfg = config.load(name, {"model.pretrained": False})
    torch.manual_seed(0)
    eager = build_model(cfg.model).eval()
    runtimes = {
        "eager": eager,
        "onnx": OnnxPoseModel(export_onnx(eager, tmp / f"{name}.onnx"), cfg.model),
    }
    if compile_:
        compiled = torch.compile(eager)
        compiled.cfg = cfg.model
        runtimes["compile"] = compiled
    flip = list(get_spec(cfg.data.dataset).flip_index)
    width, height = cfg.model.input_size
    rows = []
    for batch in batches:
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
        for model in runtimes.values():  # warm-up (and compilation)
            predict_crops(model, images, cfg.test, flip)
        runs = {key: [] for key in runtimes}
        for _ in range(rounds):
            for key, model in runtimes.items():
                runs[key].append(crops_per_second(model, images, cfg.test, flip, seconds))
        rows.append((batch, {key: statistics.median(v) for key, v in runs.items()}))
    return cfg, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["sample", "coco_res50", "coco_hrnet_w32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--threads", type=int, help="torch and ONNX Runtime threads (default: torch's own)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    extra = " | compile crops/s | compile / eager" if args.compile else ""
    print(
        "| model | crop (w x h) | flip | batch | eager crops/s | ONNX crops/s | ONNX / eager"
        f"{extra} |"
    )
    print("|---|---|---|---|---|---|---|" + ("---|---|" if args.compile else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            cfg, rows = bench_preset(
                name, args.batches, args.rounds, args.seconds, args.compile, Path(tmp)
            )
            w, h = cfg.model.input_size
            for batch, speed in rows:
                line = (
                    f"| {name} | {w} x {h} | {'yes' if cfg.test.flip else 'no'} | {batch} | "
                    f"{speed['eager']:.1f} | {speed['onnx']:.1f} | "
                    f"{speed['onnx'] / speed['eager']:.2f}x |"
                )
                if args.compile:
                    line += f" {speed['compile']:.1f} | {speed['compile'] / speed['eager']:.2f}x |"
                print(line, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
