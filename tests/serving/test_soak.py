"""A soak against the session's real TorchServe with the detector: ``REQUESTS`` requests from
``CLIENTS`` threads, good ones mixed with hostile ones (decompression bombs, inputs whose
errors would be huge, shapes the detector cannot scale, forms with fields that cannot be used,
bodies that trickle in). Bounded in count and time; figures go to docs/security.md.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter

import pytest
import requests
from PIL import Image
from sample_data import REAL_IMAGES
from serving.test_hostile_requests import trickle

PHOTO = REAL_IMAGES / "000000000872.jpg"
REQUESTS = 1000
CLIENTS = 8
TRICKLING = 20
"""Connections that send a header and a few body bytes, then nothing, for the whole soak."""
DEADLINE_S = 900
MB = 1 << 20


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 100, 110)).save(buf, "PNG")
    return buf.getvalue()


def _mix() -> list[tuple[str, dict, int]]:
    """(kind, requests.post keyword arguments, expected status) of one round of the mix; half
    of it good."""
    photo = PHOTO.read_bytes()
    b64 = base64.b64encode(photo).decode()
    bomb = base64.b64encode(_png(7000, 7000)).decode()  # 147 MB decoded, 160 kB sent
    return [
        ("good raw", {"data": photo}, 200),
        ("good json boxes", {"json": {"image": b64, "boxes": [[10, 20, 90, 150]]}}, 200),
        (
            "good form boxes",
            {"files": {"data": ("g.jpg", photo)}, "data": {"boxes": "[[5, 5, 60, 80]]"}},
            200,
        ),
        ("good raw", {"data": photo}, 200),
        ("bomb, box of no size", {"json": {"image": bomb, "boxes": [[0, 0, 0, 0]]}}, 400),
        ("bomb over max_pixels", {"data": _png(10000, 6000)}, 413),
        ("long error", {"json": {"image": b64, "box_format": "x" * 2 * MB}}, 400),
        ("3000x1 image", {"data": _png(3000, 1)}, 400),
        (
            "form with an unusable field",
            {"files": {"image": ("g.jpg", photo)}, "data": {"boxes": "[]", "box": "[[1, 2]]"}},
            400,
        ),
        ("good raw", {"data": photo}, 200),
    ]


@pytest.mark.slow
def test_a_thousand_mixed_requests(torchserve):
    url = f"{torchserve.inference_url}/predictions/ihl"
    mix = _mix()
    for _ in range(3):  # warm up: the worker's steady state is the baseline
        assert requests.post(url, data=PHOTO.read_bytes(), headers=torchserve.headers()).ok
    baseline, starts = torchserve.worker_rss(), torchserve.worker_starts()
    stop = threading.Event()
    tricklers = [
        threading.Thread(target=trickle, args=(url, stop), daemon=True) for _ in range(TRICKLING)
    ]
    for thread in tricklers:
        thread.start()
    results: list[tuple[str, int, int, int]] = []
    lock = threading.Lock()
    next_index = iter(range(REQUESTS))
    begin = time.monotonic()

    def client():
        session = requests.Session()
        while time.monotonic() - begin < DEADLINE_S:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            kind, kwargs, expected = mix[i % len(mix)]
            response = session.post(url, headers=torchserve.headers(), timeout=300, **kwargs)
            results.append((kind, expected, response.status_code, len(response.content)))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S + 300)
    seconds = time.monotonic() - begin
    stop.set()
    time.sleep(1)
    grew = torchserve.worker_rss() - baseline
    table = Counter((kind, status) for kind, _, status, _ in results)
    print(
        f"{len(results)} requests in {seconds:.0f} s from {CLIENTS} clients beside {TRICKLING} "
        f"trickling bodies; worker RSS {baseline / MB:.0f} MB, {grew / MB:+.0f} MB at the end; "
        f"worker starts {torchserve.worker_starts() - starts}; largest answer "
        f"{max(size for *_, size in results)} B\n"
        + json.dumps({f"{k} -> {s}": n for (k, s), n in sorted(table.items())}, indent=1)
    )
    assert len(results) == REQUESTS, "the soak ran past its deadline"
    wrong = [(k, e, s) for k, e, s, _ in results if s != e]
    assert not wrong, Counter(wrong)
    assert torchserve.worker_starts() == starts
    assert grew < 100 * MB
