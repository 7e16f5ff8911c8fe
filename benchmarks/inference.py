"""Pose inference throughput: eager PyTorch against ONNX Runtime and reduced precision.

Crops per second through ``predict_crops`` (the flip test included where the preset
uses it) for the ``sample`` model and the paper's ResNet-50 and HRNet-W32 models,
random weights (speed does not depend on them), at batch 1, 8 and 32. Runtimes
alternate round by round and each cell is the median round, so the ratios come
from one run under the same load. ``--compile`` adds ``torch.compile`` (slow to
compile on the CPU); ``--precisions bf16 fp16`` adds eager columns under autocast
(``ihl evaluate --precision``; fp16 on CUDA only). ``--device cuda`` runs the eager
models on the GPU (ONNX Runtime, CPU only here, is then left out).

    uv run python benchmarks/inference.py [--presets sample coco_res50 coco_hrnet_w32]
        [--batches 1 8 32] [--rounds 3] [--seconds 1.5] [--compile]
        [--precisions bf16 fp16] [--device cuda]
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
from ihl.device import resolve_device
from ihl.inference import PrecisionError, check_precision, predict_crops
from ihl.models.pose import build_model
from ihl.runtime import OnnxPoseModel, export_onnx


def crops_per_second(model, images, test, flip, seconds: float, precision: str) -> float:
    """Run whole batches for at least ``seconds`` (two batches at least)."""
    done, start = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < seconds:
        predict_crops(model, images, test, flip, precision)
        done += 1
    if images.is_cuda:
        torch.cuda.synchronize(images.device)
    return done * len(images) / (time.perf_counter() - start)


def bench_preset(
    name: str, batches, rounds: int, seconds: float, compile_: bool, precisions, device, tmp: Path
):
    cfg = config.load(name, {"model.pretrained": False})
    torch.manual_seed(0)
    eager = build_model(cfg.model).eval()
    runtimes = {"eager": (eager, "fp32")}
    if device.type == "cpu":
        onnx = OnnxPoseModel(export_onnx(eager, tmp / f"{name}.onnx"), cfg.model)
        runtimes["onnx"] = (onnx, "fp32")
    eager.to(device)
    if compile_:
        compiled = torch.compile(eager)
        compiled.cfg = cfg.model
        runtimes["compile"] = (compiled, "fp32")
    runtimes |= {f"eager {p}": (eager, p) for p in precisions}
    flip = list(get_spec(cfg.data.dataset).flip_index)
    width, height = cfg.model.input_size
    rows = []
    for batch in batches:
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
        for key, (model, precision) in runtimes.items():  # warm-up (and compilation)
            on = images if key == "onnx" else images.to(device)
            predict_crops(model, on, cfg.test, flip, precision)
        runs = {key: [] for key in runtimes}
        for _ in range(rounds):
            for key, (model, precision) in runtimes.items():
                on = images if key == "onnx" else images.to(device)
                runs[key].append(crops_per_second(model, on, cfg.test, flip, seconds, precision))
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
        "--precisions", nargs="*", default=[], choices=["bf16", "fp16"],
        help="eager columns under autocast (fp16 needs --device cuda)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="device of the eager models")
    parser.add_argument(
        "--threads", type=int, help="torch and ONNX Runtime threads (default: torch's own)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    try:
        for precision in args.precisions:
            check_precision(precision, device)
    except PrecisionError as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{now}; {where}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    others = (["onnx"] if device.type == "cpu" else []) + (["compile"] if args.compile else [])
    others += [f"eager {p}" for p in args.precisions]
    names = {"onnx": "ONNX"}
    header = "| model | crop (w x h) | flip | batch | eager crops/s | " + "".join(
        f"{names.get(k, k)} crops/s | {names.get(k, k)} / eager | " for k in others
    )
    print(header.rstrip())
    print("|---|---|---|---|---|" + "---|---|" * len(others))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            cfg, rows = bench_preset(
                name, args.batches, args.rounds, args.seconds, args.compile, args.precisions,
                device, Path(tmp),
            )  # fmt: skip
            w, h = cfg.model.input_size
            for batch, speed in rows:
                line = (
                    f"| {name} | {w} x {h} | {'yes' if cfg.test.flip else 'no'} | {batch} | "
                    f"{speed['eager']:.1f} | "
                )
                line += "".join(
                    f"{speed[k]:.1f} | {speed[k] / speed['eager']:.2f}x | " for k in others
                )
                print(line.rstrip(), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
