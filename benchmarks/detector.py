"""Person detector choice: speed and accuracy of torchvision's detection models on CPU.

Two tables from one run. The COCO architectures: inference time per real sample
photo at their usual input size (random weights: the time does not depend on them)
next to the COCO box AP torchvision publishes for their weights. The small
from-scratch variants: trained on the synthetic set (``ihl synth``) with the same
schedule, then timed and scored (pycocotools box AP on its val split).

    uv run python benchmarks/detector.py --data data/synth [--epochs 3] [--size 120]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import cv2
import torch
from torchvision.models import get_model_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sample_data import REAL_IMAGES  # noqa: E402

from ihl.config import DetectorConfig  # noqa: E402
from ihl.detection.boxap import evaluate_detector  # noqa: E402
from ihl.detection.detect import detect  # noqa: E402
from ihl.detection.models import TORCHVISION, build_detector  # noqa: E402
from ihl.detection.train import train_detector  # noqa: E402

SMALL = ("fcos_small", "retinanet_small", "fasterrcnn_small")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seconds_per_image(model, images, cfg, rounds: int = 2) -> float:
    detect(model, images[:1], cfg)
    start = time.perf_counter()
    for _ in range(rounds):
        for image in images:
            detect(model, [image], cfg)
    return (time.perf_counter() - start) / (rounds * len(images))


def coco_table(images) -> None:
    print("| architecture | input short side | s/photo | params (M) | COCO box AP (torchvision) |")
    print("|---|---|---|---|---|")
    for arch in TORCHVISION:
        cfg = DetectorConfig(architecture=arch, weights=None)
        if "320" in arch:
            cfg = cfg.model_copy(update={"min_size": 320, "max_size": 320})
        model = build_detector(cfg)
        meta = get_model_weights(TORCHVISION[arch]).DEFAULT.meta
        ap = meta["_metrics"]["COCO-val2017"]["box_map"]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        side = "320" if arch.startswith("ssd") else cfg.min_size
        t = seconds_per_image(model, images, cfg, rounds=1)
        print(f"| {arch} | {side} | {t:.3f} | {params:.1f} | {ap:.1f} |", flush=True)


def small_table(root: str, epochs: int, size: int, archs) -> None:
    print(
        "| architecture | short side | epochs | train s | train CPU s | box AP | AP50 | s/image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arch in archs:
        cfg = DetectorConfig(
            architecture=arch, weights=None, epochs=epochs, min_size=size, max_size=size * 4 // 3
        )
        wall, cpu = time.perf_counter(), cpu_seconds()
        model = train_detector(cfg, root, log=lambda _: None)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        start = time.perf_counter()
        metrics, _ = evaluate_detector(model, cfg, root)
        per_image = (time.perf_counter() - start) / 100
        print(
            f"| {arch} | {size} | {epochs} | {wall:.0f} | {cpu:.0f} | {metrics['box_AP']:.3f} | "
            f"{metrics['box_AP50']:.3f} | {per_image:.3f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=120, help="short side for the small ones")
    parser.add_argument("--small", nargs="*", default=list(SMALL))
    parser.add_argument("--skip-coco", action="store_true")
    parser.add_argument(
        "--threads", type=int, help="torch and ONNX Runtime threads (default: torch's own)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    if not args.skip_coco:
        images = [
            cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
            for p in sorted(REAL_IMAGES.glob("*.jpg"))
        ]
        coco_table(images)
    small_table(args.data, args.epochs, args.size, args.small)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
