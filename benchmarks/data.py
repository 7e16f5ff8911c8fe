"""Data pipeline throughput: samples per second for one loader worker.

Times what one DataLoader worker does per training sample on real photos:
JPEG decode, augmentation, affine warp to 256x192 and targets, with and without
64x48 Gaussian heatmaps (the IHL head needs only coordinates; the heatmap
baseline and the Wasserstein term need maps). Each worker is one process with
one thread, so OpenCV and torch are held to one thread here too.

Sets: the COCO sample (ground-truth boxes of its annotations) and the unlabelled
photos of real_images, whose larger JPEGs cost more to decode; those get one
whole-image box each and the joints of a sample person scaled into it, so the
target code has the same work to do. Target: >= 150 samples/s per worker.

    uv run python benchmarks/data.py [--data data/samples] [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from ihl.data.coco import CocoKeypoints
from ihl.data.keypoints import COCO
from ihl.data.transforms import (
    TopDownAugment,
    TopDownPipeline,
    box_to_center_scale,
    sample_rng,
)
from ihl.image_io import read_image_bgr

INPUT_SIZE = (192, 256)  # (width, height)
HEATMAP_SIZE = (48, 64)
TARGET = 150.0
REPO = Path(__file__).resolve().parents[1]


def coco_sample_loader(root: Path, heatmaps: bool) -> tuple[Callable[[int, int], dict], int]:
    dataset = CocoKeypoints(
        root / "coco_sample/annotations/person_keypoints_sample.json",
        root / "coco_sample/images",
        train=True,
        input_size=INPUT_SIZE,
        heatmap_size=HEATMAP_SIZE if heatmaps else None,
    )

    def load(epoch: int, index: int) -> dict:
        dataset.set_epoch(epoch)
        return dataset[index]

    return load, len(dataset)


def real_images_loader(root: Path, heatmaps: bool) -> tuple[Callable[[int, int], dict], int]:
    """Decode from disk every time, as a worker does; the box is the whole photo."""
    reference = CocoKeypoints(
        root / "coco_sample/annotations/person_keypoints_sample.json",
        root / "coco_sample/images",
        input_size=INPUT_SIZE,
    )
    joints, boxes = reference.keypoints[0], reference.boxes[0]
    unit = (joints[:, :2] - boxes[:2]) / boxes[2:]
    paths = sorted((root / "real_images").glob("*.jpg"))
    pipeline = TopDownPipeline(
        COCO,
        INPUT_SIZE,
        HEATMAP_SIZE if heatmaps else None,
        augment=TopDownAugment(COCO, INPUT_SIZE),
    )
    sizes = [read_image_bgr(p).shape[:2] for p in paths]
    width, height = INPUT_SIZE
    aspect = width / height

    def load(epoch: int, index: int) -> dict:
        h, w = sizes[index]
        center, scale = box_to_center_scale((0, 0, w, h), aspect)
        image = read_image_bgr(paths[index])
        return pipeline(
            image, center, scale, unit * [w, h], joints[:, 2], sample_rng(0, epoch, index)
        )

    return load, len(paths)


def throughput(load: Callable[[int, int], dict], count: int, seconds: float) -> tuple[int, float]:
    """(samples, samples per second) over whole passes, after one warm-up pass."""
    for index in range(count):
        load(0, index)
    done, epoch, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for index in range(count):
            load(epoch, index)
        done += count
        epoch += 1
    return done, done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / "data" / "samples",
        help="folder holding coco_sample/ and real_images/ (default: data/samples)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    header = f"{'images':<12} {'heatmaps':<9} {'samples':>8} {'samples/s':>10}  target {TARGET:.0f}"
    print(f"decode + augment + warp {INPUT_SIZE[1]}x{INPUT_SIZE[0]} + targets, one worker")
    print(header)
    print("-" * len(header))
    for name, make in (("coco_sample", coco_sample_loader), ("real_images", real_images_loader)):
        for heatmaps in (False, True):
            load, count = make(args.data, heatmaps)
            samples, rate = throughput(load, count, args.seconds)
            verdict = "ok" if rate >= TARGET else "BELOW"
            print(
                f"{name:<12} {'on' if heatmaps else 'off':<9} {samples:>8} {rate:>10.1f}  {verdict}"
            )


if __name__ == "__main__":
    main()
