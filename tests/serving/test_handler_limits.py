"""The handler's limits, box rules, form reading and batch retry, called as TorchServe calls it.

A ``Context`` stands in for TorchServe's: it records the status and content type set
for each request. The model is the session's tiny exported checkpoint; limits are set
small here so that the tests decode only small images.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sample_data import REAL_IMAGES

from ihl.checkpoint import load_model

REPO = Path(__file__).resolve().parents[2]
PHOTO = REAL_IMAGES / "000000000872.jpg"


def _load_handler_module():
    spec = importlib.util.spec_from_file_location(
        "ihl_handler", REPO / "serving" / "ihl_handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _load_handler_module()


class Context:
    """TorchServe's context as the handler uses it: one entry per HTTP request."""

    def __init__(self, requests: int):
        self.request_processor = [None] * requests
        self.status: dict[int, int] = {}
        self.content_type: dict[int, str] = {}

    def set_response_status(self, code, phrase, idx=0):
        self.status[idx] = code

    def set_all_response_status(self, code, phrase):
        self.status = dict.fromkeys(range(len(self.request_processor)), code)

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def handler(serving_checkpoint):
    service = H.PoseHandler()
    service.model, service.cfg = load_model(serving_checkpoint)
    service.model.eval()
    service.detector = None  # an archive exported without a detector
    service.limits = dict(H.DEFAULTS)
    service.header = {"keypoint_names": [], "skeleton": []}
    service.model_info = {"name": "ihl", "version": "3"}
    service.initialized = True
    return service


@pytest.fixture
def limits(handler):
    saved = dict(handler.limits)
    yield handler.limits
    handler.limits.clear()
    handler.limits.update(saved)


def _call(handler, rows, requests=None):
    """(answers, statuses) for ``rows``; ``requests`` < len(rows) means a KServe envelope."""
    context = Context(len(rows) if requests is None else requests)
    answers = handler.handle(rows, context)
    for answer in answers:
        json.dumps(answer, allow_nan=False)  # every answer is valid JSON
    statuses = [context.status.get(i, 200) for i in range(len(context.request_processor))]
    return answers, statuses


def _instance(png: bytes, boxes=None) -> dict:
    import base64

    row = {"image": base64.b64encode(png).decode()}
    return row if boxes is None else row | {"boxes": boxes}


def test_sixteen_bit_images_are_scaled_without_a_float64_copy():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (1000, 1500), dtype=np.uint16)
    image = Image.fromarray(values)
    expected = np.rint(values / 257.0).astype(np.uint8)
    tracemalloc.start()
    try:
        rgb = H.to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert rgb.dtype == np.uint8 and rgb.shape == (1000, 1500, 3)
    # int32 work array (4 B) + the uint8 result (3 B + 1 B); a float64 copy alone is 8 B
    assert peak < 9 * values.size, f"{peak / values.size:.1f} bytes per pixel"


def test_too_many_instances_refused_before_reading_any(handler, limits, monkeypatch):
    limits["max_instances"] = 3
    monkeypatch.setattr(H, "open_image", lambda *a: pytest.fail("read an instance"))
    answers, statuses = _call(handler, [_instance(_png(20, 20))] * 4, requests=1)
    assert statuses == [413]
    assert "max_instances" in answers[0]["error"]


def test_request_pixels_counted_from_headers_before_decoding(handler, limits, monkeypatch):
    limits["max_request_pixels"] = 30_000
    monkeypatch.setattr(H, "decode_image", lambda *a: pytest.fail("decoded a refused image"))
    rows = [_instance(_png(160, 120)), _instance(_png(160, 120))]  # 2 x 19200 pixels
    answers, statuses = _call(handler, rows, requests=1)
    assert statuses == [413]
    assert "max_request_pixels" in answers[0]["error"]


def test_crops_of_a_request_sum_over_its_instances(handler, limits):
    limits["max_boxes"] = 5
    rows = [_instance(_png(64, 64), [[0, 0, 10, 10]] * 3)] * 2
    answers, statuses = _call(handler, rows, requests=1)
    assert statuses == [400]
    assert "6 crops" in answers[0]["error"] and "max_boxes" in answers[0]["error"]


def test_batch_pixel_limit_refuses_the_requests_past_it(handler, limits, monkeypatch):
    limits["max_batch_pixels"] = 30_000
    decoded = []
    real = H.decode_image
    monkeypatch.setattr(H, "decode_image", lambda image: decoded.append(image.size) or real(image))
    rows = [{"body": _png(160, 120)}, {"body": _png(160, 120)}, {"body": _png(40, 30)}]
    answers, statuses = _call(handler, rows)
    assert statuses == [200, 429, 200]
    assert "max_batch_pixels" in answers[1]["error"]
    assert decoded == [(160, 120), (40, 30)]  # the refused image was never decoded


def test_batch_crop_limit(handler, limits):
    limits["max_batch_crops"] = 8
    png = _png(64, 64)
    rows = [_instance(png, [[0, 0, 10, 10]] * 5), _instance(png, [[0, 0, 10, 10]] * 5)]
    answers, statuses = _call(handler, rows)
    assert statuses == [200, 429]
    assert len(answers[0]["persons"]) == 5
    assert "max_batch_crops" in answers[1]["error"]


def test_limits_that_could_never_admit_a_valid_request_are_refused():
    with pytest.raises(ValueError, match="max_boxes .* larger than max_batch_crops"):
        H.read_limits({"max_boxes": 1000, "max_batch_crops": 10})
    with pytest.raises(ValueError, match="unknown key"):
        H.read_limits({"max_box": 10})


def test_crop_cap_follows_the_measured_rate(handler):
    limits = H.read_limits({})
    rate = H.crop_rate(handler.model, handler.cfg)
    assert rate > 0
    H.cap_crops(limits, rate=2.0, response_timeout=20)  # 20 crops fill half of 20 s
    assert limits["max_batch_crops"] == 20 and limits["max_boxes"] == 20
    H.cap_crops(limits, rate=1000.0, response_timeout=120)  # never above the configured cap
    assert limits["max_batch_crops"] == 20


def test_a_failing_forward_pass_fails_only_its_own_request(handler, monkeypatch):
    real = H.predict_images

    def fragile(model, cfg, images, *args, **kwargs):
        if any(image.shape[1] == 77 for image in images):
            raise RuntimeError("this input breaks the model")
        return real(model, cfg, images, *args, **kwargs)

    monkeypatch.setattr(H, "predict_images", fragile)
    rows = [{"body": _png(64, 48)}, {"body": _png(77, 50)}, {"body": _png(50, 64)}]
    answers, statuses = _call(handler, rows)
    assert statuses == [200, 500, 200]
    assert answers[0]["persons"][0]["bbox"] == [0, 0, 64, 48]
    assert answers[2]["persons"][0]["bbox"] == [0, 0, 50, 64]
    assert "the model failed on this request" in answers[1]["error"]


@pytest.mark.parametrize(
    ("boxes", "box_format", "message"),
    [
        ([[-1e308, 0, 1e308, 10]], "xyxy", "non-finite"),
        ([[-1000, 0, 30, 10]], "xyxy", "reaches further"),
        ([[0, 0, 1e308, 1e308]], "xywh", "reaches further"),
        ([[-1e308, -1e308, 1e308, 1e308]], "xyxy", "non-finite"),  # 2e308 overflows
        ([[10, 10, 5e-324, 20]], "xywh", "under 1 px"),
        ([[10, 10, 0.5, 20]], "xywh", "under 1 px"),
        ([[10, 10, 10.4, 20]], "xyxy", "under 1 px"),
    ],
)
def test_boxes_need_finite_edges_and_one_pixel(boxes, box_format, message):
    with pytest.raises(H.RequestError, match=message) as err:
        H.parse_boxes(boxes, box_format, 64, 64, 100)
    assert err.value.status == 400


def test_a_box_of_one_pixel_past_the_edge_is_served(handler):
    answers, statuses = _call(handler, [_instance(_png(64, 64), [[-30, -30, 60, 61]])])
    assert statuses == [200], answers
    keypoints = np.asarray(answers[0]["persons"][0]["keypoints"])
    assert np.isfinite(keypoints).all()


def test_image_in_a_form_field_of_another_name(handler):
    photo = PHOTO.read_bytes()
    answers, statuses = _call(handler, [{"file": photo, "boxes": b"[[5, 5, 60, 80]]"}])
    assert statuses == [200], answers
    assert answers[0]["persons"][0]["bbox"] == [5, 5, 60, 80]


def test_a_body_torchserve_decoded_as_a_url_encoded_form_gets_a_clear_415(handler):
    # what TorchServe hands over for `curl --data-binary @gray.jpg` (no Content-Type):
    # the body became one form field name, its non-UTF-8 bytes replaced by U+FFFD
    mangled = PHOTO.read_bytes()[:200].decode("utf-8", "replace")
    answers, statuses = _call(handler, [{mangled: b""}])
    assert statuses == [415]
    assert "curl -T photo.jpg" in answers[0]["error"]
    answers, statuses = _call(handler, [{"a": "x\ufffdy".encode()}])
    assert statuses == [415]


def test_the_shipped_model_config_sets_every_limit_to_its_default():
    shipped = yaml.safe_load((REPO / "serving" / "model-config.yaml").read_text())["handler"]
    assert H.read_limits(shipped) == H.DEFAULTS
    assert set(shipped) == set(H.DEFAULTS)
