"""The pose service's limits, request forms, error sizes, memory and batch retry, called in
this process as TorchServe's handler calls it (``serving.calls``).

The model is the session's tiny exported checkpoint; limits are set small here so that the
tests decode only small images. Memory is the process's own peak RSS (``VmHWM``, reset
through ``/proc/self/clear_refs``), not a stubbed decoder.
"""

from __future__ import annotations

import gc
import io
import json
import tracemalloc
import types

import numpy as np
import pytest
from PIL import Image
from sample_data import REAL_IMAGES
from serving.calls import call, instance, noise_png, png, shipped_limits

from ihl.checkpoint import load_model
from ihl.edge.serving import service as service_module
from ihl.edge.serving.images import to_rgb
from ihl.edge.serving.limits import LIMITS, cap_crops, read_limits
from ihl.edge.serving.reading import MESSAGE_CHARS, RequestError, parse_boxes
from ihl.edge.serving.service import PoseService, crop_rate

PHOTO = REAL_IMAGES / "000000000872.jpg"
BIG = (7000, 7000)
"""A PNG of 49 million pixels: under max_pixels, 147 MB decoded, 160 kB as a file."""
MB = 1 << 20


@pytest.fixture(scope="module")
def service(serving_checkpoint):
    model, cfg = load_model(serving_checkpoint)
    return PoseService(
        model.eval(), cfg, shipped_limits(), header={"keypoint_names": [], "skeleton": []},
        model_info={"name": "ihl", "version": "3"},
    )  # fmt: skip


@pytest.fixture
def limits(service):
    saved = dict(service.limits)
    yield service.limits
    service.limits.clear()
    service.limits.update(saved)


@pytest.fixture(scope="module")
def big_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", BIG, (120, 130, 140)).save(buf, "PNG")
    return buf.getvalue()


def _peak_rss_growth(step) -> int:
    """Bytes the process's peak RSS grew by while ``step()`` ran."""

    def peak() -> int:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM"))
        return int(line.split()[1]) * 1024

    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak restarts from the current RSS
    before = peak()
    step()
    return peak() - before


def test_sixteen_bit_images_are_scaled_without_a_float64_copy():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (1000, 1500), dtype=np.uint16)
    image = Image.fromarray(values)
    expected = np.rint(values / 257.0).astype(np.uint8)
    tracemalloc.start()
    try:
        rgb = to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert rgb.dtype == np.uint8 and rgb.shape == (1000, 1500, 3)
    # int32 work array (4 B) + the uint8 result (3 B + 1 B); a float64 copy alone is 8 B
    assert peak < 9 * values.size, f"{peak / values.size:.1f} bytes per pixel"


def test_too_many_instances_refused_before_reading_any(service, limits, monkeypatch):
    limits["max_instances"] = 3
    monkeypatch.setattr(service_module, "open_image", lambda *a: pytest.fail("read an instance"))
    answers, statuses = call(service, [instance(png(20, 20))] * 4, requests=1)
    assert statuses == [413]
    assert "max_instances" in answers[0]["error"]


@pytest.mark.parametrize("refusal", ["box of no size", "request pixels", "batch pixels"])
def test_refused_images_are_never_decoded(service, limits, big_png, refusal):
    """A 7000x7000 PNG is 147 MB decoded; refused from its header, the process's peak RSS
    grows by less than a third of that (Pillow's PNG getexif() used to decode it)."""
    limits["max_batch_pixels"] = limits["max_request_pixels"] = 50_000_000
    rows, requests, expected = {
        "box of no size": ([instance(big_png, [[0, 0, 0, 0]])], None, [400]),
        "request pixels": ([instance(big_png)] * 2, 1, [413]),  # one KServe request
        "batch pixels": ([{"body": png(1100, 1000)}, {"body": big_png}], None, [200, 429]),
    }[refusal]
    decoded = BIG[0] * BIG[1] * 3
    statuses = []
    grew = _peak_rss_growth(lambda: statuses.extend(call(service, rows, requests)[1]))
    assert statuses == expected
    assert grew < decoded / 3, f"peak RSS grew {grew / MB:.0f} MB; decoded: {decoded / MB:.0f} MB"


def test_a_refused_request_leaves_no_reference_cycle(service):
    """Kept exceptions made cycles through their tracebacks, so the frames holding a refused
    request's images lived until a full garbage collection."""
    gc.collect()
    gc.disable()
    try:
        answers, statuses = call(service, [instance(png(64, 64), [[0, 0, 0, 0]])])
        assert statuses == [400], answers
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kept = [o for o in gc.garbage if isinstance(o, types.TracebackType | BaseException)]
        frames = [o for o in gc.garbage if isinstance(o, types.FrameType)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not kept and not frames, f"{len(kept)} exceptions, {len(frames)} frames in cycles"


def test_crops_of_a_request_sum_over_its_instances(service, limits):
    limits["max_boxes"] = 5
    rows = [instance(png(64, 64), [[0, 0, 10, 10]] * 3)] * 2
    answers, statuses = call(service, rows, requests=1)
    assert statuses == [400]
    assert "6 crops" in answers[0]["error"] and "max_boxes" in answers[0]["error"]


def test_batch_pixel_limit_refuses_the_requests_past_it(service, limits):
    limits["max_batch_pixels"] = 30_000
    rows = [{"body": png(160, 120)}, {"body": png(160, 120)}, {"body": png(40, 30)}]
    answers, statuses = call(service, rows)
    assert statuses == [200, 429, 200]
    assert "max_batch_pixels" in answers[1]["error"]


def test_batch_crop_limit(service, limits):
    limits["max_batch_crops"] = 8
    data = png(64, 64)
    rows = [instance(data, [[0, 0, 10, 10]] * 5), instance(data, [[0, 0, 10, 10]] * 5)]
    answers, statuses = call(service, rows)
    assert statuses == [200, 429]
    assert len(answers[0]["persons"]) == 5
    assert "max_batch_crops" in answers[1]["error"]


def test_limits_are_read_from_one_place_and_must_admit_a_valid_request():
    shipped = shipped_limits()
    assert set(shipped) == set(LIMITS)
    with pytest.raises(ValueError, match="max_boxes .* larger than max_batch_crops"):
        read_limits(shipped | {"max_boxes": 1000, "max_batch_crops": 10})
    with pytest.raises(ValueError, match="unknown key.*max_box"):
        read_limits(shipped | {"max_box": 10})
    with pytest.raises(ValueError, match="missing key.*max_aspect_ratio"):
        read_limits({k: v for k, v in shipped.items() if k != "max_aspect_ratio"})


def test_crop_cap_follows_the_measured_rate(service):
    limits = shipped_limits()
    assert crop_rate(service.model, service.cfg) > 0
    cap_crops(limits, rate=2.0, response_timeout=20)  # 20 crops fill half of 20 s
    assert limits["max_batch_crops"] == 20 and limits["max_boxes"] == 20
    cap_crops(limits, rate=1000.0, response_timeout=120)  # never above the configured cap
    assert limits["max_batch_crops"] == 20


def test_a_failing_forward_pass_fails_only_its_own_request(service, monkeypatch):
    real = service_module.predict_images

    def fragile(model, cfg, images, *args, **kwargs):
        if any(image.shape[1] == 77 for image in images):
            raise RuntimeError("this input breaks the model")
        return real(model, cfg, images, *args, **kwargs)

    monkeypatch.setattr(service_module, "predict_images", fragile)
    rows = [{"body": png(64, 48)}, {"body": png(77, 50)}, {"body": png(50, 64)}]
    answers, statuses = call(service, rows)
    assert statuses == [200, 500, 200]
    assert answers[0]["persons"][0]["bbox"] == [0, 0, 64, 48]
    assert answers[2]["persons"][0]["bbox"] == [0, 0, 50, 64]
    assert "the model failed on this request" in answers[1]["error"]


def test_a_detector_failure_fails_only_its_own_request(detecting):
    """A 3000x1 image made the detector's resize fail, and every request of its batch with it."""
    rows = [{"body": png(3000, 1)}, {"body": noise_png(1)}, {"body": png(1, 500)}]
    answers, statuses = call(detecting, rows)
    assert statuses == [400, 200, 400], answers
    assert "max_aspect_ratio" in answers[0]["error"] and len(answers[1]["persons"]) == 6
    detecting.limits["max_aspect_ratio"] = 10**6  # the shape reaches the detector
    answers, statuses = call(detecting, rows)
    assert statuses == [500, 200, 500], answers
    assert "the detector failed on this request" in answers[0]["error"]
    assert len(answers[1]["persons"]) == 6


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
    with pytest.raises(RequestError, match=message) as err:
        parse_boxes(boxes, box_format, 64, 64, 100)
    assert err.value.status == 400


def test_a_box_of_one_pixel_past_the_edge_is_served(service):
    answers, statuses = call(service, [instance(png(64, 64), [[-30, -30, 60, 61]])])
    assert statuses == [200], answers
    keypoints = np.asarray(answers[0]["persons"][0]["keypoints"])
    assert np.isfinite(keypoints).all()


@pytest.mark.parametrize("field", ["data", "file", "image"])
def test_a_form_answers_its_own_boxes_whatever_the_image_field(service, field):
    """``-F data=@photo.jpg -F box_format=xyxy -F boxes=...`` was read as a raw body, and its
    boxes were dropped for the detector's (or the whole image)."""
    row = {field: PHOTO.read_bytes(), "box_format": b"xyxy", "boxes": b"[[10, 20, 100, 170]]"}
    answers, statuses = call(service, [row])
    assert statuses == [200], answers
    assert [p["bbox"] for p in answers[0]["persons"]] == [[10, 20, 90, 150]]


@pytest.mark.parametrize(
    "row",
    [
        {"image": b"x", "boxes": b"[]", "note": b"hello"},  # a field beside the image
        {"data": b"x", "file": b"y"},  # two files: which is the image?
        {"body": b"x", "boxes": "[[0, 0, 10, 10]]"},  # a query parameter beside a raw body
        {"boxes": b"[[0, 0, 10, 10]]"},  # no image at all
    ],
)
def test_a_form_whose_fields_cannot_all_be_used_is_refused(service, row):
    row = {k: (PHOTO.read_bytes() if v in (b"x", b"y") else v) for k, v in row.items()}
    answers, statuses = call(service, [row])
    assert statuses == [400], answers
    assert "cannot be used" in answers[0]["error"] or "form fields received" in answers[0]["error"]


HUGE = 10**6


@pytest.mark.parametrize(
    "row",
    [
        {"image": "QUJD", "box_format": "x" * HUGE},
        {"image": "QUJD", "k" * HUGE: 1},
        {"image": "QUJD", "boxes": [[0] * HUGE]},
        {"image": "QUJD", "boxes": [["a" * HUGE, 0, 10, 10]]},
        {"image": "QUJD", "boxes": [[0, 0, 10, 10, 2.0, "a" * HUGE]]},
        {"f" * HUGE: b"x", "g": b"y"},
        {"body": b"{" + b" " * HUGE + b"x"},
        {"image": "!" * HUGE},
    ],
    ids=["box_format", "key", "box", "box value", "box length", "field", "json", "base64"],
)
def test_errors_quote_at_most_a_few_characters_of_a_huge_input(service, row):
    """Errors quoted the input in full; past max_response_size TorchServe restarts the worker."""
    png_b64 = instance(png(64, 64))["image"]
    row = {k: (png_b64 if v == "QUJD" else v) for k, v in row.items()}
    answers, statuses = call(service, [row])
    assert 400 <= statuses[0] < 500
    assert len(json.dumps(answers[0])) < MESSAGE_CHARS + 50, answers[0]["error"][:200]
    answers, statuses = call(service, [row] * 16, requests=1)  # a KServe request repeats it
    assert sum(len(json.dumps(a)) for a in answers) < 16 * (MESSAGE_CHARS + 50)


def test_a_body_torchserve_decoded_as_a_url_encoded_form_gets_a_clear_415(service):
    # what TorchServe hands over for `curl --data-binary @gray.jpg` (no Content-Type):
    # the body became one form field name, its non-UTF-8 bytes replaced by U+FFFD
    mangled = PHOTO.read_bytes()[:200].decode("utf-8", "replace")
    answers, statuses = call(service, [{mangled: b""}])
    assert statuses == [415]
    assert "curl -T photo.jpg" in answers[0]["error"]
    answers, statuses = call(service, [{"a": "x\ufffdy".encode()}])
    assert statuses == [415]
