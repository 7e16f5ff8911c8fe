"""Person detector choice: speed and accuracy of torchvision's detection models on CPU.

Two tables from one run. The COCO architectures: inference time per real sample
photo at their usual input size (random weights: the time does not depend on them)
next to the COCO box AP torchvision publishes for their weights. The small
from-scratch variants: trained on the synthetic set (``ihl synth``) with the same
schedule, then timed and scored (pycocotools box AP on its val split).

With ``--runtimes`` instead: eager PyTorch against ONNX Runtime, images per second
(one image per call, as a request without boxes; runtimes alternate round by round,
each cell the median round) and their agreement, for a trained detector file
(``--detector``, on the synthetic val images, with both runtimes' box AP) and for
torchvision architectures with random weights (jittered so that scores do not tie;
on the real sample photos).

    uv run python benchmarks/detector.py --data data/synth [--epochs 3] [--size 120]
    uv run python benchmarks/detector.py --runtimes --detector detector/detector.pt \
        --data data/synth [--coco fasterrcnn_mobilenet_v3_large_320_fpn] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.models import get_model_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sample_data import REAL_IMAGES  # noqa: E402

from ihl.config import DetectorConfig  # noqa: E402
from ihl.detection.boxap import evaluate_detector  # noqa: E402
from ihl.detection.detect import detect  # noqa: E402
from ihl.detection.models import TORCHVISION, build_detector, load_detector  # noqa: E402
from ihl.detection.onnx import onnx_detector  # noqa: E402
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


def _images_per_second(model, images, cfg) -> float:
    start = time.perf_counter()
    for image in images:
        detect(model, [image], cfg)
    return len(images) / (time.perf_counter() - start)


def _agreement(eager, ort, tolerance: float = 1e-2) -> tuple[int, int, float]:
    """(eager detections, those without an ONNX one within ``tolerance`` px and 1e-5 in
    score, the largest box gap of the matched) over images; order-free, as near-equal
    scores may swap."""
    total, unmatched, gap = 0, 0, 0.0
    for (a_boxes, a_scores), (b_boxes, b_scores) in zip(eager, ort, strict=True):
        total += len(a_boxes)
        if not len(a_boxes) or not len(b_boxes):
            unmatched += max(len(a_boxes), len(b_boxes))
            continue
        box_gap = np.abs(a_boxes[:, None] - b_boxes[None]).max(-1)
        box_gap[np.abs(a_scores[:, None] - b_scores[None]) > 1e-5] = np.inf
        nearest = box_gap.min(1)
        unmatched += int((nearest > tolerance).sum()) + abs(len(a_boxes) - len(b_boxes))
        gap = max(gap, float(nearest[nearest <= tolerance].max(initial=0.0)))
    return total, unmatched, gap


def runtime_table(entries, rounds: int, data: str | None, tmp: Path) -> None:
    """``entries``: (name, model, config, images, score a box AP on ``data``)."""
    print(
        "| detector | images | eager img/s | ONNX img/s | ONNX / eager | detections | "
        "unmatched | max box gap px | box AP eager | box AP ONNX |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model, cfg, images, score in entries:
        ort, _ = onnx_detector(model, cfg, tmp / f"{name}.onnx")
        raw = cfg.model_copy(update={"score_threshold": 0.0, "max_persons": 1000})
        eager_found = [detect(model, [im], raw)[0] for im in images]
        total, unmatched, gap = _agreement(
            eager_found, [detect(ort, [im], raw)[0] for im in images]
        )
        speed = {"eager": [], "onnx": []}
        for _ in range(rounds):
            speed["eager"].append(_images_per_second(model, images, cfg))
            speed["onnx"].append(_images_per_second(ort, images, cfg))
        eager, fast = (statistics.median(v) for v in speed.values())
        ap = ["—", "—"]
        if score:
            ap = [f"{evaluate_detector(m, cfg, data)[0]['box_AP']:.4f}" for m in (model, ort)]
        print(
            f"| {name} | {len(images)} | {eager:.2f} | {fast:.2f} | {fast / eager:.2f}x | "
            f"{total} | {unmatched} | {gap:.4f} | {ap[0]} | {ap[1]} |",
            flush=True,
        )


def runtimes(args) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    entries = []
    if args.detector:
        model, cfg = load_detector(args.detector)
        val = sorted((Path(args.data) / "val2017").glob("*.jpg"))[: args.images]
        images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in val]
        entries.append(
            (f"{cfg.architecture} ({Path(args.detector).name})", model, cfg, images, True)
        )
    photos = [
        cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        for p in sorted(REAL_IMAGES.glob("*.jpg"))
    ]
    for arch in args.coco:
        torch.manual_seed(0)
        cfg = DetectorConfig(architecture=arch, weights=None)
        if "320" in arch:
            cfg = cfg.model_copy(update={"min_size": 320, "max_size": 320})
        model = build_detector(cfg)
        with torch.no_grad():  # random heads start with equal scores, which NMS breaks at random
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        entries.append((f"{arch} (random)", model, cfg, photos, False))
    with tempfile.TemporaryDirectory() as tmp:
        runtime_table(entries, args.rounds, args.data, Path(tmp))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


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
    parser.add_argument("--runtimes", action="store_true", help="eager against ONNX Runtime")
    parser.add_argument("--detector", help="with --runtimes: a trained detector file")
    parser.add_argument(
        "--coco", nargs="*", default=["fasterrcnn_mobilenet_v3_large_320_fpn"],
        help="with --runtimes: torchvision architectures, random weights",
    )  # fmt: skip
    parser.add_argument("--images", type=int, default=20, help="with --runtimes: val images")
    parser.add_argument("--rounds", type=int, default=3, help="with --runtimes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.runtimes:
        runtimes(args)
        return
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
