"""Serving cost: TorchServe (batching on and off) against the same model called in-process.

A 640x480 JPEG (a real photo, resized) with 1 and with 5 person boxes, posted
as JSON (base64 image and boxes) to a real TorchServe serving an archive from
`ihl export`, token auth on, one worker. In-process is what a Python caller
would do with the same checkpoint: decode the JPEG (OpenCV) and call
``ihl.predict.predict_image``. Both run with the same number of torch threads.

- latency: one client, requests one after another (p50 and p95);
- throughput: ``--clients`` concurrent clients (in-process: calls one after another,
  as a single-threaded caller would), requests per second.

Batching on is serving/model-config.yaml's batch size with a short delay;
batching off is batch size 1. Ratios are taken within this one run, so a busy
machine slows both sides alike.

Then the one-box request split into its parts, each timed in this process with the
handler's own functions (median of ``--requests``): JSON + base64 decode of the body,
image decode, detection (the same image without boxes, with ``--detector``), crop,
forward, answer encode; "HTTP and TorchServe" is the batching-on p50 less their sum.

    uv run python benchmarks/serving.py [--checkpoint CKPT] [--detector FILE] [--requests 40]
        [--clients 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import requests
import torch
import yaml

from ihl import config
from ihl.checkpoint import load_model, save_model
from ihl.data.keypoints import get_spec
from ihl.edge.export import export_model
from ihl.image_io import read_image_bgr
from ihl.models import build_model
from ihl.predict import predict_image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "serving")]
from torchserve import TorchServe  # noqa: E402  (the tests' real-TorchServe helper)

from ihl.detection.detect import detect  # noqa: E402
from ihl.detection.models import load_detector  # noqa: E402
from ihl.edge.serving.images import decode_image, open_image  # noqa: E402
from ihl.inference import predict_crops  # noqa: E402
from ihl.predict import make_crops  # noqa: E402

LIMITS = yaml.safe_load((REPO / "serving" / "model-config.yaml").read_text())["handler"]
"""The handler's limits, as ``ihl export`` packs them."""
PHOTO = REPO / "data" / "samples" / "real_images" / "000000000872.jpg"
BOXES = [[40, 30, 200, 420], [250, 60, 150, 400], [420, 100, 180, 360], [5, 200, 120, 270]]
BOXES.append([300, 10, 330, 460])


def photo_640x480() -> bytes:
    image = cv2.resize(read_image_bgr(PHOTO), (640, 480), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def in_process_call(model, cfg, jpeg: bytes, boxes):
    """What a Python caller does: decode the JPEG, then predict."""

    def call():
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
        predict_image(model, cfg, rgb, boxes)

    return call


def server_call(server: TorchServe, model_name: str, body: dict, failures: list[str]):
    url = f"{server.inference_url}/predictions/{model_name}"
    headers = server.headers()
    session = requests.Session()

    def call():
        response = session.post(url, json=body, headers=headers, timeout=300)
        if response.status_code != 200:
            failures.append(f"{response.status_code} {response.text[:200]}")

    return call


def latencies(calls: dict, n: int) -> dict[str, list[float]]:
    """Sequential calls, round robin over the paths, so that a change in the machine's load
    during the run weighs on every path alike."""
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(n):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    return times


def concurrent_rps(make_call, clients: int, per_client: int) -> float:
    def client():
        call = make_call()
        for _ in range(per_client):
            call()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - start)


def parts(model, cfg, body: dict, detector, n: int) -> dict[str, float]:
    """Median milliseconds of each step of one request, run here with the handler's code."""
    text = json.dumps(body)
    flip = list(get_spec(cfg.data.dataset).flip_index)
    steps = {
        "JSON + base64": lambda: base64.b64decode(json.loads(text)["image"]),
        "decode": lambda: decode_image(
            open_image(jpeg, LIMITS["max_pixels"], LIMITS["max_aspect_ratio"])
        ),
    }
    jpeg = base64.b64decode(body["image"])
    rgb = decode_image(open_image(jpeg, LIMITS["max_pixels"], LIMITS["max_aspect_ratio"]))
    if detector is not None:
        steps["detect (no boxes)"] = lambda: detect(detector[0], [rgb], detector[1])
    crops = make_crops(rgb, body["boxes"], cfg.model.input_size)[0]
    steps["crop"] = lambda: make_crops(rgb, body["boxes"], cfg.model.input_size)
    steps["forward"] = lambda: predict_crops(model, crops, cfg.test, flip)
    answer = {"persons": predict_image(model, cfg, rgb, body["boxes"])}
    steps["encode"] = lambda: json.dumps(answer)
    times = {}
    with torch.inference_mode():
        for label, step in steps.items():
            step()
            seconds = []
            for _ in range(n):
                start = time.perf_counter()
                step()
                seconds.append(time.perf_counter() - start)
            times[label] = 1000 * float(np.median(seconds))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: a random `sample` model")
    parser.add_argument("--detector", type=Path, help="detector file, for the detect step")
    parser.add_argument("--requests", type=int, default=40, help="sequential requests per case")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    parser.add_argument("--batch-size", type=int, default=8, help="TorchServe batch, batching on")
    parser.add_argument("--max-batch-delay", type=int, default=10, help="ms, batching on")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="ihl-bench-serving-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            cfg = config.load("sample")
            checkpoint = save_model(tmp / "sample.pt", build_model(cfg.model), cfg)
        model, cfg = load_model(checkpoint)
        model.eval()
        store = tmp / "store"
        store.mkdir()
        variants = {"batching on": "ihl_batched", "batching off": "ihl_single"}
        for label, name in variants.items():
            on = label == "batching on"
            archive = export_model(
                checkpoint,
                tmp / name,
                name=name,
                batch_size=args.batch_size if on else 1,
                max_batch_delay=args.max_batch_delay if on else 0,
            )
            archive.rename(store / archive.name)
        server = TorchServe(tmp / "ts", store).start(timeout=600)
        try:
            jpeg = photo_640x480()
            image = base64.b64encode(jpeg).decode()
            failures: list[str] = []
            rows = []
            for k in (1, 5):
                boxes = BOXES[:k]
                body = {"image": image, "boxes": boxes}
                calls = {"in-process": in_process_call(model, cfg, jpeg, boxes)}
                for label, name in variants.items():
                    calls[f"TorchServe, {label}"] = server_call(server, name, body, failures)
                times = latencies(calls, args.requests)
                results = {}
                for label, seconds in times.items():
                    p50, p95 = percentiles(seconds)
                    if label == "in-process":  # one caller, one call at a time
                        rps = len(seconds) / sum(seconds)
                    else:
                        name = variants[label.removeprefix("TorchServe, ")]
                        rps = concurrent_rps(
                            partial(server_call, server, name, body, failures),
                            args.clients,
                            max(1, 2 * args.requests // args.clients),
                        )
                    results[label] = {"p50": p50, "p95": p95, "rps": rps}
                rows += [(k, label, r, results["in-process"]) for label, r in results.items()]
            if failures:
                raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
            restarts = server.worker_starts() - len(variants)
            found_by = None if args.detector is None else load_detector(args.detector)
            split = parts(model, cfg, {"image": image, "boxes": BOXES[:1]}, found_by, args.requests)
        finally:
            server.stop()

    print(
        f"\n640x480 JPEG, model {cfg.name} ({cfg.model.backbone}, {cfg.model.input_size[0]}x"
        f"{cfg.model.input_size[1]}, flip test {'on' if cfg.test.flip else 'off'}), "
        f"{args.threads} torch threads, {args.requests} sequential requests, "
        f"{args.clients} clients for throughput, batching on = batch {args.batch_size} / "
        f"{args.max_batch_delay} ms"
    )
    header = f"{'boxes':>5}  {'path':<26}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>8}"
    print(header + f"{'p50 x':>8}{'req/s x':>9}")
    for k, label, r, base in rows:
        print(
            f"{k:>5}  {label:<26}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['rps']:>8.1f}"
            f"{r['p50'] / base['p50']:>8.2f}{r['rps'] / base['rps']:>9.2f}"
        )
    for k in (1, 5):
        on, off = (r for kk, label, r, _ in rows if kk == k and label.startswith("TorchServe"))
        print(f"{k} box(es): batching on / off throughput = {on['rps'] / off['rps']:.2f}")
    served = next(r for k, label, r, _ in rows if k == 1 and label == "TorchServe, batching on")
    inside = sum(v for label, v in split.items() if not label.startswith("detect"))
    print("\none box, batching on, p50 split (ms):")
    for label, ms in {**split, "HTTP and TorchServe": served["p50"] - inside}.items():
        print(f"  {label:<22}{ms:>9.2f}")
    print(f"worker restarts: {restarts}; x columns are ratios to in-process for the same boxes")


if __name__ == "__main__":
    main()
