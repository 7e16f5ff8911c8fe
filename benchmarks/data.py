"""Data pipeline throughput: samples per second for one loader worker.

Times what one DataLoader worker does per training sample on real photos:
JPEG decode, augmentation, affine warp to 256x192 and targets: coordinates only
(the IHL head), plus the 1-D factors of the 64x48 Gaussian maps that workers
ship for the heatmap baseline and the Wasserstein term (``marginals``), and,
for comparison, the full 17x64x48 maps workers used to build and ship (``maps``;
training now rebuilds them on the device). ``KB`` is what one sample sends
through shared memory. Each worker is one process with one thread, so OpenCV
and torch are held to one thread here too.

Sets: the COCO sample (ground-truth boxes of its annotations) and the unlabelled
photos of real_images, whose larger JPEGs cost more to decode; those get one
whole-image box each and the joints of a sample person scaled into it, so the
target code has the same work to do. Target: >= 150 samples/s per worker.

One worker is one core, so samples/s is also the rate per core, and a GPU
training at ``--gpu-rate`` images/s needs gpu-rate / rate cores of loader
workers (the ``cores/GPU`` column; add one for the training process itself).

A second table times ``data.decode: device``: the worker then only reads the file and
draws the augmentation and targets (``worker``), and the training process decodes and
warps the batch (``ihl.data.device_decode``), timed here on one CPU core in batches of 32
(``decode+warp``): on a GPU that part runs on nvJPEG and is measured by benchmarks/gpu.py.

    uv run python benchmarks/data.py [--data data/samples] [--seconds 3] [--gpu-rate 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from ihl.data.coco import CocoKeypoints
from ihl.data.device_decode import batch_images, collate, encoded_sample
from ihl.data.keypoints import COCO
from ihl.data.transforms import (
    TopDownAugment,
    TopDownPipeline,
    box_to_center_scale,
    heatmaps_from_marginals,
    sample_rng,
)
from ihl.image_io import read_image_bgr, read_image_file

INPUT_SIZE = (192, 256)  # (width, height)
HEATMAP_SIZE = (48, 64)
TARGET = 150.0
REPO = Path(__file__).resolve().parents[1]


def coco_sample_loader(
    root: Path, heatmaps: bool, decode: str = "cpu"
) -> tuple[Callable[[int, int], dict], int]:
    dataset = CocoKeypoints(
        root / "coco_sample/annotations/person_keypoints_sample.json",
        root / "coco_sample/images",
        train=True,
        input_size=INPUT_SIZE,
        heatmap_size=HEATMAP_SIZE if heatmaps else None,
        decode=decode,
    )

    def load(epoch: int, index: int) -> dict:
        dataset.set_epoch(epoch)
        return dataset[index]

    return load, len(dataset)


def real_images_loader(
    root: Path, heatmaps: bool, decode: str = "cpu"
) -> tuple[Callable[[int, int], dict], int]:
    """Decode from disk every time, as a worker does; the box is the whole photo. With
    ``decode="device"`` read the file and ship it encoded, as a worker then does."""
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
        person = (center, scale, unit * [w, h], joints[:, 2], sample_rng(0, epoch, index))
        if decode == "device":
            data = read_image_file(paths[index])
            return encoded_sample(data, *pipeline.geometry(*person), str(paths[index]))
        return pipeline(read_image_bgr(paths[index]), *person)

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
    parser.add_argument(
        "--gpu-rate",
        type=float,
        default=2000.0,
        help="training images/s of one GPU to feed (cores/GPU column); default 2000",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    header = (
        f"{'images':<12} {'targets':<10} {'KB':>6} {'samples':>8} {'samples/s':>10} "
        f"{'cores/GPU':>10}  target {TARGET:.0f}"
    )
    print(
        f"decode + augment + warp {INPUT_SIZE[1]}x{INPUT_SIZE[0]} + targets, one worker = one "
        f"core; cores/GPU for {args.gpu_rate:.0f} images/s per GPU"
    )
    print(header)
    print("-" * len(header))
    for name, make in (("coco_sample", coco_sample_loader), ("real_images", real_images_loader)):
        for targets in ("coords", "marginals", "maps"):
            load, count = make(args.data, targets != "coords")
            if targets == "maps":
                load = with_full_maps(load)
            samples, rate = throughput(load, count, args.seconds)
            size = sample_bytes(load(0, 0))
            verdict = "ok" if rate >= TARGET else "BELOW"
            print(
                f"{name:<12} {targets:<10} {size / 1024:>6.0f} {samples:>8} {rate:>10.1f} "
                f"{args.gpu_rate / rate:>10.1f}  {verdict}"
            )

    header = (
        f"{'images':<12} {'targets':<10} {'KB':>6} {'worker/s':>9} {'cores/GPU':>10} "
        f"{'decode+warp/s':>14}"
    )
    print(
        "\ndata.decode: device (worker: read file, augment, targets; decode+warp: the "
        "training process, here on one CPU core)"
    )
    print(header)
    print("-" * len(header))
    for name, make in (("coco_sample", coco_sample_loader), ("real_images", real_images_loader)):
        load, count = make(args.data, True, "device")
        _, rate = throughput(load, count, args.seconds)
        size = sample_bytes(load(0, 0))
        main_rate = decode_warp_rate(load, count, args.seconds)
        print(
            f"{name:<12} {'marginals':<10} {size / 1024:>6.0f} {rate:>9.1f} "
            f"{args.gpu_rate / rate:>10.1f} {main_rate:>14.1f}"
        )


def sample_bytes(sample: dict) -> int:
    """What one sample sends through shared memory: its tensors (an encoded file is one)."""
    return sum(v.numel() * v.element_size() for v in sample.values() if torch.is_tensor(v))


def decode_warp_rate(load: Callable[[int, int], dict], count: int, seconds: float) -> float:
    """Samples/s of the training process's decode and warp (``batch_images``) on the CPU, in
    batches of up to 32 encoded samples (one pass of the set, collated)."""
    samples = [load(1, index) for index in range(count)]
    batches = [collate(samples[i : i + 32]) for i in range(0, count, 32)]
    cpu = torch.device("cpu")
    for batch in batches:
        batch_images(batch, INPUT_SIZE, cpu)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches:
            done += len(batch_images(batch, INPUT_SIZE, cpu))
    return done / (time.perf_counter() - start)


def with_full_maps(load: Callable[[int, int], dict]) -> Callable[[int, int], dict]:
    """The sample as workers built it before: full Gaussian maps instead of their factors."""

    def full(epoch: int, index: int) -> dict:
        sample = load(epoch, index)
        sample["heatmaps"] = heatmaps_from_marginals(
            sample.pop("heatmap_x"), sample.pop("heatmap_y")
        )
        return sample

    return full


if __name__ == "__main__":
    main()
