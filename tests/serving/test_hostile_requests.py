"""Hostile requests against the session's real TorchServes (with the detector): refused
images leave the worker's memory where it was, huge inputs get small errors and no worker
restart, and an image shape the detector cannot scale fails alone.

Memory is the real worker's resident set, read from /proc (``TorchServe.worker_rss``).
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from sample_data import REAL_IMAGES

PHOTO = REAL_IMAGES / "000000000872.jpg"
MB = 1 << 20
TIMEOUT = 120
REFUSED = 6
"""Refused requests of a 7000x7000 PNG: 147 MB each, decoded (187 MB measured per request
before the fix, never given back)."""


@pytest.fixture(scope="module")
def big_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (120, 130, 140)).save(buf, "PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(server, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.inference_url}/predictions/ihl",
        headers=server.headers(),
        timeout=TIMEOUT,
        **kwargs,
    )


def _kserve(server, instances) -> requests.Response:
    url = f"{server.inference_url}/v1/models/ihl:predict"
    return requests.post(url, json={"instances": instances}, timeout=TIMEOUT)


def test_refused_big_images_leave_the_worker_memory_at_its_baseline(torchserve, big_png):
    assert _post(torchserve, data=PHOTO.read_bytes()).status_code == 200
    baseline = torchserve.worker_rss()
    for _ in range(REFUSED):
        response = _post(torchserve, json={"image": _b64(big_png), "boxes": [[0, 0, 0, 0]]})
        assert response.status_code == 400, response.text
    grew = torchserve.worker_rss() - baseline
    print(f"worker RSS {baseline / MB:.0f} MB -> +{grew / MB:.0f} MB after {REFUSED} refusals")
    assert grew < 100 * MB


def test_refused_kserve_instances_leave_the_worker_memory_at_its_baseline(kserve, big_png):
    """Two 49-megapixel instances go over max_request_pixels: 413, nothing decoded."""
    assert _kserve(kserve, [{"image": _b64(PHOTO.read_bytes())}]).status_code == 200
    baseline = kserve.worker_rss()
    for _ in range(REFUSED // 2):
        response = _kserve(kserve, [{"image": _b64(big_png)}] * 2)
        assert response.status_code == 413, response.text
    grew = kserve.worker_rss() - baseline
    print(f"worker RSS {baseline / MB:.0f} MB -> +{grew / MB:.0f} MB after {REFUSED // 2} refusals")
    assert grew < 100 * MB


def test_a_huge_input_gets_a_small_error_and_the_worker_lives(torchserve, kserve):
    """Errors quoted their input in full: past max_response_size (6.5 MB) TorchServe answered
    'Worker died.' and restarted the worker; under KServe 16 instances of a 420 kB error."""
    image = _b64(PHOTO.read_bytes())
    starts = torchserve.worker_starts(), kserve.worker_starts()
    response = _post(torchserve, json={"image": image, "box_format": "x" * 7_000_000})
    assert response.status_code == 400 and len(response.content) < 1000, response.text[:300]
    small = io.BytesIO()
    Image.new("RGB", (64, 64)).save(small, "PNG")
    instances = [{"image": _b64(small.getvalue()), "box_format": "y" * 420_000}] * 16
    response = _kserve(kserve, instances)
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 16 * 1000
    assert (torchserve.worker_starts(), kserve.worker_starts()) == starts
    assert _post(torchserve, data=PHOTO.read_bytes()).status_code == 200


def test_an_image_the_detector_cannot_scale_fails_alone_in_its_batch(torchserve):
    """A 3000x1 image beside a photo made the detector fail and the whole batch get 503."""
    thin = io.BytesIO()
    Image.new("RGB", (3000, 1)).save(thin, "PNG")
    bodies = [thin.getvalue(), PHOTO.read_bytes(), PHOTO.read_bytes()]
    barrier = threading.Barrier(len(bodies))
    statuses = [0] * len(bodies)

    def send(i):
        barrier.wait()
        statuses[i] = _post(torchserve, data=bodies[i]).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert statuses == [400, 200, 200]


def trickle(url: str, stop: threading.Event) -> None:
    """A client that starts a 1 MB body and sends one byte a second until ``stop``."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: 1048576\r\n\r\n".encode()
        )
        while not stop.wait(1.0):
            try:
                sock.sendall(b"\xff")
            except OSError:
                return


def test_trickling_bodies_hold_no_worker(torchserve):
    """TorchServe 0.12 has no timeout for a body that never finishes (its netty pipeline has no
    idle or read timeout): such connections stay open until the client or something in front
    (docs/security.md) closes them. They hold a socket and what they sent, never the worker."""
    url = f"{torchserve.inference_url}/predictions/ihl"
    stop = threading.Event()
    clients = [threading.Thread(target=trickle, args=(url, stop), daemon=True) for _ in range(50)]
    for client in clients:
        client.start()
    try:
        time.sleep(3)
        starts = torchserve.worker_starts()
        begin = time.monotonic()
        assert _post(torchserve, data=PHOTO.read_bytes()).status_code == 200
        print(f"answered in {time.monotonic() - begin:.1f} s beside 50 trickling bodies")
        assert torchserve.worker_starts() == starts
    finally:
        stop.set()
