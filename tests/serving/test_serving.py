"""The serving contract against the session's real TorchServe (token auth on) serving an
exported archive with a person detector.

Answers are compared with the same checkpoint and detector run in this process
(``detect``, ``predict_image``) on the image as it should have been decoded, so they check
decoding, detection, box handling and the mapping back to original image coordinates at once.
"""

from __future__ import annotations

import base64
import io
import json
import threading

import cv2
import numpy as np
import pytest
import requests
from PIL import Image
from sample_data import REAL_IMAGES
from serving.conftest import PERSONS

from ihl.data.keypoints import COCO
from ihl.detection.detect import detect
from ihl.predict import predict_image

PHOTO = REAL_IMAGES / "000000000872.jpg"
TIMEOUT = 120
TOLERANCE = 0.05
"""Pixels: the server batches crops differently from the in-process call, nothing more."""


def _post(server, headers=None, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.inference_url}/predictions/ihl",
        headers=server.headers() if headers is None else headers,
        timeout=TIMEOUT,
        **kwargs,
    )


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def photo_rgb() -> np.ndarray:
    """The photo decoded by OpenCV, as `ihl predict` reads files (an independent decoder)."""
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def small_rgb(photo_rgb) -> np.ndarray:
    """A 160x120 RGB crop of the photo: small requests, lossless formats compared exactly."""
    return np.ascontiguousarray(cv2.resize(photo_rgb, (160, 120), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def expect(served_model, served_detector):
    """The persons the server should answer for ``rgb``: in ``boxes``, or the detector's."""
    model, cfg = served_model

    def persons(rgb, boxes=None, scores=None):
        if boxes is None:
            ((boxes, scores),) = detect(served_detector[0], [rgb], served_detector[1])
        return predict_image(model, cfg, rgb, boxes, scores)

    return persons


def _check(answer: dict, expected: list[dict]) -> None:
    assert answer["keypoint_names"] == list(COCO.joints)
    assert answer["skeleton"] == [list(pair) for pair in COCO.skeleton]
    assert answer["model"] == {"name": "ihl", "version": "3"}
    assert len(answer["persons"]) == len(expected)
    for got, want in zip(answer["persons"], expected, strict=True):
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
        assert got["box_score"] == pytest.approx(want["box_score"], abs=1e-4)
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert np.asarray(got["keypoints"]).shape == (17, 3)
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=TOLERANCE)


def test_raw_jpeg_bytes_detected_persons(torchserve, expect, photo_rgb):
    response = _post(torchserve, data=PHOTO.read_bytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert len(answer["persons"]) == PERSONS
    _check(answer, expect(photo_rgb))


BOXES = [[120.5, 40.0, 180.0, 380.0], [10, 20, 90, 150, 0.8]]


def test_json_with_boxes_in_original_coordinates(torchserve, expect, photo_rgb):
    response = _post(torchserve, json={"image": _b64(PHOTO.read_bytes()), "boxes": BOXES})
    assert response.status_code == 200, response.text
    expected = expect(photo_rgb, [b[:4] for b in BOXES], [1.0, 0.8])
    _check(response.json(), expected)
    # keypoints lie around their own box, in image pixels
    for person, box in zip(response.json()["persons"], BOXES, strict=True):
        centre = np.asarray(person["keypoints"])[:, :2].mean(0)
        assert box[0] - box[2] < centre[0] < box[0] + 2 * box[2]
        assert box[1] - box[3] < centre[1] < box[1] + 2 * box[3]


def test_xyxy_boxes_and_a_data_url(torchserve, expect, photo_rgb):
    xyxy = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in BOXES]
    image = "data:image/jpeg;base64," + _b64(PHOTO.read_bytes())
    response = _post(torchserve, json={"image": image, "boxes": xyxy, "box_format": "xyxy"})
    assert response.status_code == 200, response.text
    _check(response.json(), expect(photo_rgb, [b[:4] for b in BOXES]))


def test_multipart_with_and_without_boxes(torchserve, expect, photo_rgb):
    files = {"image": ("photo.jpg", PHOTO.read_bytes(), "image/jpeg")}
    response = _post(torchserve, files=files, data={"boxes": json.dumps([BOXES[0]])})
    assert response.status_code == 200, response.text
    _check(response.json(), expect(photo_rgb, [BOXES[0]]))
    response = _post(torchserve, files=files)
    assert response.status_code == 200, response.text
    _check(response.json(), expect(photo_rgb))


def test_empty_box_list_means_nobody(torchserve):
    response = _post(torchserve, json={"image": _b64(PHOTO.read_bytes()), "boxes": []})
    assert response.status_code == 200, response.text
    assert response.json()["persons"] == []


def _gray(rgb):
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _modes(rgb):
    """(name, encoded bytes, the RGB image the server should see or None if lossy)."""
    pil = Image.fromarray(rgb)
    gray = _gray(rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:30, :40] = (0, 0, 0, 0)  # transparent corner: black underneath, white over white
    over_white = rgb.copy()
    over_white[:30, :40] = 255
    palette = pil.quantize(64)
    upright_stored_sideways = pil.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return [
        ("png", _encode(pil, "PNG"), rgb),
        ("bmp", _encode(pil, "BMP"), rgb),
        ("webp-lossless", _encode(pil, "WEBP", lossless=True), rgb),
        ("grayscale-png", _encode(Image.fromarray(gray), "PNG"), np.dstack([gray] * 3)),
        (
            "16-bit-png",
            _encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
            np.dstack([gray] * 3),
        ),
        ("rgba-png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), over_white),
        ("palette-png", _encode(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        ("exif-rotated-png", _encode(upright_stored_sideways, "PNG", exif=exif), rgb),
        ("exif-rotated-jpeg", _encode(upright_stored_sideways, "JPEG", exif=exif), None),
        ("cmyk-jpeg", _encode(pil.convert("CMYK"), "JPEG", quality=95), None),
        ("webp-lossy", _encode(pil, "WEBP", quality=80), None),
    ]


def test_image_modes_and_formats(torchserve, expect, small_rgb):
    h, w = small_rgb.shape[:2]
    for name, data, expected in _modes(small_rgb):
        response = _post(torchserve, data=data)
        assert response.status_code == 200, f"{name}: {response.text}"
        answer = response.json()
        if expected is not None:
            _check(answer, expect(expected))
        # a box in the upright image's far corner lies inside it: EXIF orientation applied
        corner = {"boxes": f"[[{w - 5}, {h - 5}, 5, 5]]"}
        response = _post(torchserve, files={"image": ("i", data)}, data=corner)
        assert response.status_code == 200, f"{name}: {response.text}"


def _bad_requests(photo: bytes):
    b64 = _b64(photo)
    big = _encode(Image.new("L", (8000, 7000)), "PNG")  # 56 MP in a few kB: a pixel bomb
    return [
        ("empty body", {"data": b""}, 400, "empty"),
        ("not an image", {"data": b"hello, not an image at all"}, 415, "not a supported image"),
        ("gif", {"data": _encode(Image.new("RGB", (20, 20)), "GIF")}, 415, "JPEG, PNG, WebP"),
        ("truncated jpeg", {"data": photo[: len(photo) // 2]}, 400, "truncated"),
        ("oversized image", {"data": big}, 413, "too large"),
        (
            "malformed json",
            {"data": b'{"image": "abc", ', "headers": {"Content-Type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("json list", {"json": [b64]}, 400, "must be an object"),
        ("bad base64", {"json": {"image": "not base64!"}}, 400, "base64"),
        ("no image key", {"json": {"boxes": [[0, 0, 5, 5]]}}, 400, "'image'"),
        ("unknown key", {"json": {"image": b64, "box": [[0, 0, 5, 5]]}}, 400, '["box"]'),
        ("zero-size box", {"json": {"image": b64, "boxes": [[10, 10, 0, 50]]}}, 400, "zero"),
        ("negative box", {"json": {"image": b64, "boxes": [[10, 10, 30, -5]]}}, 400, "negative"),
        (
            "inverted xyxy box",
            {"json": {"image": b64, "boxes": [[50, 50, 10, 10]], "box_format": "xyxy"}},
            400,
            "zero or negative size",
        ),
        (
            "NaN in a box",
            {
                "data": f'{{"image": "{b64}", "boxes": [[1, 2, NaN, 4]]}}'.encode(),
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "non-finite",
        ),
        ("text in a box", {"json": {"image": b64, "boxes": [["a", 1, 2, 3]]}}, 400, "non-numeric"),
        ("short box", {"json": {"image": b64, "boxes": [[1, 2, 3]]}}, 400, "box #0"),
        ("box outside", {"json": {"image": b64, "boxes": [[5000, 10, 20, 20]]}}, 400, "outside"),
        ("box score", {"json": {"image": b64, "boxes": [[1, 2, 30, 40, 7]]}}, 400, "score"),
        (
            "too many boxes",
            {"json": {"image": b64, "boxes": [[0, 0, 10, 10]] * 101}},
            400,
            "too many boxes",
        ),
        ("bad box format", {"json": {"image": b64, "box_format": "cxcywh"}}, 400, "box_format"),
        ("boxes not a list", {"json": {"image": b64, "boxes": 5}}, 400, "list"),
        (
            "multipart with two files, neither named image",
            {"files": {"picture": ("p.jpg", photo, "image/jpeg"), "thumb": ("t.jpg", photo)}},
            400,
            "one image file",
        ),
        (
            "multipart malformed boxes",
            {"files": {"image": ("p.jpg", photo, "image/jpeg")}, "data": {"boxes": "[[1, 2"}},
            400,
            "malformed JSON in form field 'boxes'",
        ),
    ]


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_answering(torchserve):
    starts = torchserve.worker_starts()
    photo = PHOTO.read_bytes()
    for name, kwargs, status, message in _bad_requests(photo):
        headers = torchserve.headers() | kwargs.pop("headers", {})
        response = _post(torchserve, headers=headers, **kwargs)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        error = response.json()
        assert error["code"] == status, name
        assert message in error["error"], f"{name}: {error['error']}"
    assert _post(torchserve, data=photo).status_code == 200
    assert torchserve.worker_starts() == starts


def _together(server, requests_kwargs):
    """Send requests at the same moment from one thread each; responses in order."""
    barrier = threading.Barrier(len(requests_kwargs))
    results = [None] * len(requests_kwargs)

    def send(i, kwargs):
        barrier.wait()
        results[i] = _post(server, **kwargs)

    threads = [threading.Thread(target=send, args=item) for item in enumerate(requests_kwargs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    return results


def test_one_bad_request_in_a_batch_fails_alone(torchserve, expect, photo_rgb):
    log = torchserve.workdir / "logs" / "model_log.log"
    seen = log.read_text(errors="replace")
    photo = PHOTO.read_bytes()
    good = [
        {"data": photo},
        {"json": {"image": _b64(photo), "boxes": BOXES}},
        {"files": {"image": ("p.jpg", photo, "image/jpeg")}, "data": {"boxes": "[[5, 5, 60, 80]]"}},
    ]
    bad = {"json": {"image": _b64(photo), "boxes": [[10, 10, -1, 5]]}}
    responses = _together(torchserve, [good[0], bad, good[1], good[2]])
    assert [r.status_code for r in responses] == [200, 400, 200, 200], [r.text for r in responses]
    assert "negative size" in responses[1].json()["error"]
    _check(responses[0].json(), expect(photo_rgb))
    _check(responses[2].json(), expect(photo_rgb, [b[:4] for b in BOXES], [1, 0.8]))
    _check(responses[3].json(), expect(photo_rgb, [[5, 5, 60, 80]]))
    batches = log.read_text(errors="replace")[len(seen) :]
    # the handler logs each batch: the bad request was refused inside a batch with good ones
    assert any(f"batch of {n} requests (1 refused)" in batches for n in range(2, 5)), batches[
        -2000:
    ]


def test_concurrent_load_no_failure_no_worker_restart(torchserve, expect, small_rgb):
    starts = torchserve.worker_starts()
    png = _encode(Image.fromarray(small_rgb), "PNG")
    expected = expect(small_rgb, [[10, 10, 60, 100]] * 5)
    errors: list[str] = []

    def client(k):
        for i in range(5):
            boxes = [[10, 10, 60, 100]] * (1 + (i + k) % 5)
            response = _post(torchserve, json={"image": _b64(png), "boxes": boxes})
            if response.status_code != 200:
                errors.append(f"client {k} request {i}: {response.status_code} {response.text}")
                continue
            try:
                _check(response.json(), expected[: len(boxes)])
            except AssertionError as err:
                errors.append(f"client {k} request {i}: {err}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * TIMEOUT)
    assert errors == []
    assert torchserve.worker_starts() == starts


def test_token_authorization(torchserve):
    photo = PHOTO.read_bytes()
    keys = torchserve.keys()
    for headers in ({}, {"Authorization": "Bearer wrong"}, torchserve.headers("management")):
        response = _post(torchserve, headers=headers, data=photo)
        assert response.status_code in (400, 401, 403), headers
        assert "Token Authorization failed" in response.text
    assert keys["inference"] != keys["management"]
    models = f"{torchserve.management_url}/models"
    assert requests.get(models, timeout=TIMEOUT).status_code in (400, 401, 403)
    listed = requests.get(models, headers=torchserve.headers("management"), timeout=TIMEOUT)
    assert listed.status_code == 200
    assert listed.json()["models"][0]["modelName"] == "ihl"


def test_model_api_is_off(torchserve):
    """Registering or deleting models needs enable_model_api=true, even with the key."""
    headers = torchserve.headers("management")
    models = f"{torchserve.management_url}/models"
    register = requests.post(f"{models}?url=ihl.mar", headers=headers, timeout=TIMEOUT)
    assert register.status_code == 405, register.text
    delete = requests.delete(f"{models}/ihl", headers=headers, timeout=TIMEOUT)
    assert delete.status_code == 405, delete.text
    assert _post(torchserve, data=PHOTO.read_bytes()).status_code == 200


def test_a_20_mib_photo_is_admitted_a_larger_body_refused(torchserve):
    noise = np.random.default_rng(0).integers(0, 256, (2800, 4000, 3), dtype=np.uint8)
    photo = _encode(Image.fromarray(noise), "JPEG", quality=100)
    assert len(photo) > 20 * 2**20
    response = _post(torchserve, data=photo)
    assert response.status_code == 200, response.text
    assert "persons" in response.json()
    too_big = _post(torchserve, data=photo + bytes(9 * 2**20))
    assert too_big.status_code == 413
    assert _post(torchserve, data=PHOTO.read_bytes()).status_code == 200
