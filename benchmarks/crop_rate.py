"""Crops per second through ``predict_images``: the number behind the handler's crop cap.

A TorchServe batch must finish inside the model's ``responseTimeout``
(serving/model-config.yaml), or TorchServe kills the worker and every request
of the batch fails. The handler therefore caps the crops of one batch
(``max_batch_crops``); this script measures crops/s for presets at their own
crop size and test-time flip (random weights: the cost does not depend on
them) and prints the cap that fills half of ``responseTimeout`` on this CPU.

    uv run python benchmarks/crop_rate.py [--presets sample coco_res50] [--threads 2] [--crops 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from ihl import config
from ihl.edge.export import serving_dir
from ihl.models import build_model
from ihl.predict import predict_images

SAFETY = 0.5
"""Share of responseTimeout a full batch may take (the handler's BATCH_TIME_SHARE)."""


def crops_per_second(preset: str, crops: int) -> float:
    cfg = config.load(preset, {"model.pretrained": False})
    model = build_model(cfg.model).eval()
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = [[40.0 + i % 5, 30.0, 200.0, 400.0] for i in range(crops)]
    with torch.inference_mode():
        predict_images(model, cfg, [image], [boxes[:2]], [None])  # warm up
        start = time.perf_counter()
        predict_images(model, cfg, [image], [boxes], [None], batch_size=128)
    return crops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["sample", "coco_res50", "coco_hrnet_w48"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crops", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timeout = yaml.safe_load((serving_dir() / "model-config.yaml").read_text())["responseTimeout"]
    print(f"torch threads {args.threads}, responseTimeout {timeout} s, safety {SAFETY}")
    print(f"{'preset':<16} {'crop (w x h)':>12} {'flip':>5} {'crops/s':>8} {'cap':>6}")
    for preset in args.presets:
        cfg = config.load(preset, {"model.pretrained": False})
        rate = crops_per_second(preset, args.crops)
        w, h = cfg.model.input_size
        cap = int(rate * timeout * SAFETY)
        print(f"{preset:<16} {f'{w} x {h}':>12} {cfg.test.flip!s:>5} {rate:8.1f} {cap:6d}")


if __name__ == "__main__":
    main()
