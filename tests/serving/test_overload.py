"""TorchServe's queue, body limit and Java memory sized together (serving/config.properties,
docs/serving.md "Memory of the frontend"): queued bodies fit the heap, and the bodies being
received at once (bounded in front of TorchServe, which has no such limit: KServe's
``containerConcurrency``) fit the direct memory beside a batch on its way to the worker.

The shipped sizes are checked against the formula, then run scaled down by ``SCALE`` (body
limit, heap and direct memory divided) against a real TorchServe sent as many full-size
bodies at once as the formula admits.
"""

from __future__ import annotations

import io
import re
import threading
from collections import Counter

import numpy as np
import pytest
import requests
from PIL import Image
from serving.torchserve import CONFIG, TorchServe, _properties

MIB = 1 << 20
SCALE = 4
FRONTEND_MIB = 512
"""Heap the frontend needs besides queued bodies."""
BATCH = 8
"""serving/model-config.yaml's batchSize."""


def _sizes(properties: dict[str, str]) -> dict[str, int]:
    def mib(option: str) -> int:
        number, unit = re.search(rf"{option}(\d+)([mg])", properties["vmargs"]).groups()
        return int(number) * (1024 if unit == "g" else 1)

    return {
        "queue": int(properties["job_queue_size"]),
        "body_mib": int(properties["max_request_size"]) // MIB,
        "heap_mib": mib("-Xmx"),
        "direct_mib": mib("-XX:MaxDirectMemorySize="),
    }


def concurrent_bodies(sizes: dict[str, int]) -> int:
    """Full-size bodies the direct memory holds beside one batch (8) on its way to the worker."""
    return (sizes["direct_mib"] - BATCH * sizes["body_mib"]) // sizes["body_mib"]


def test_the_shipped_queue_fits_the_java_heap():
    for config in (CONFIG, CONFIG.with_name("kserve.config.properties")):
        sizes = _sizes(_properties(config.read_text()))
        assert sizes["queue"] * sizes["body_mib"] <= sizes["heap_mib"] - FRONTEND_MIB, config
        assert concurrent_bodies(sizes) >= 2 * BATCH, config


def test_kserve_lets_no_more_bodies_into_a_pod_than_the_direct_memory_holds():
    from ihl.edge.registry.kserve import inference_service

    sizes = _sizes(_properties(CONFIG.with_name("kserve.config.properties").read_text()))
    digest = "0" * 64
    for gpus in (0, 1):
        predictor = inference_service("s3://b/ihl/1/", digest, gpus=gpus)["spec"]["predictor"]
        assert 1 <= predictor["containerConcurrency"] <= concurrent_bodies(sizes)


@pytest.mark.slow
def test_as_many_full_bodies_as_the_formula_admits_are_served_and_no_worker_dies(
    detector_export, tmp_path
):
    sizes = _sizes(_properties(CONFIG.read_text()))
    body_limit = sizes["body_mib"] * MIB // SCALE
    server = TorchServe(
        tmp_path / "ts",
        detector_export / "model-store",
        max_request_size=str(body_limit),
        vmargs=f"-Xmx{sizes['heap_mib'] // SCALE}m "
        f"-XX:MaxDirectMemorySize={sizes['direct_mib'] // SCALE}m",
    ).start()
    try:
        noise = np.random.default_rng(0).integers(0, 256, (1000, 1600, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=100)
        body = buf.getvalue() + bytes(body_limit - 1024 - len(buf.getvalue()))
        clients = concurrent_bodies(sizes)
        starts = server.worker_starts()
        statuses: list[int | str] = []
        barrier = threading.Barrier(clients)

        def client():
            barrier.wait()
            try:
                response = requests.put(
                    f"{server.inference_url}/predictions/ihl",
                    data=body, headers=server.headers(), timeout=600,
                )  # fmt: skip
                statuses.append(response.status_code)
            except requests.RequestException as err:
                statuses.append(type(err).__name__)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        counted = Counter(statuses)
        print(f"{clients} clients, {len(body) / MIB:.1f} MiB bodies: {dict(counted)}")
        assert set(counted) <= {200, 503}, counted
        assert counted[200] >= 1
        assert server.worker_starts() == starts, server.log_tail()
    finally:
        server.stop()
