"""TorchServe handler: images (and optional person boxes) in, COCO keypoints out.

One request is raw image bytes, a multipart form with an ``image`` file (or a
single file field of another name) and optional ``boxes`` (and ``box_format``)
fields, or a JSON object
``{"image": base64, "boxes": [[x, y, w, h], ...], "box_format": "xywh"|"xyxy"}``.
Without boxes the archive's person detector (``detector.pt``) finds the persons,
or, in an archive without one, the whole image is one person box; ``"boxes": []``
means nobody. Each person in the answer carries its ``box_score`` (the
detector's, or the one given with the box, 1 by default). An archive with
``pose.onnx`` runs the pose model under ONNX Runtime (CPU), one with ``detector.onnx``
the detector; the ``precision`` of the ``handler`` section (fp32, bf16 or fp16, written by
``ihl export --precision``) is the one the pose model's forward runs under. Every crop
of every request in a TorchServe batch goes through the network together; a request that
cannot be served gets its own 4xx status and a JSON error while the others in
its batch are answered normally, and if the forward pass of a batch fails, each
request is retried alone so that only the one at fault fails.

Limits come from the ``handler`` section of the archive's model-config.yaml
(see ``DEFAULTS``): pixels and crops are counted from the image headers and the
boxes before any pixel is decoded, per image, per request and per batch, so no
request can hold more memory or time than the limits allow; the persons the detector finds
are counted again, the same way, before any crop is cut. The joint names and
skeleton come from the archive's ``keypoints.json``. The model, crops, flip test
and mapping back to image pixels are ``ihl``'s own (``ihl.predict``).
The HTTP contract is docs/rest-api.md.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from ts.torch_handler.base_handler import BaseHandler

from ihl.boxes import BoxError, parse_box
from ihl.checkpoint import load_model
from ihl.detection.detect import detect
from ihl.detection.models import load_detector
from ihl.device import resolve_device
from ihl.inference import check_precision
from ihl.predict import predict_images

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
"""Decoders Pillow may use: the photo formats served, nothing more (no EPS, no PDF)."""
DEFAULTS = {
    "max_pixels": 50_000_000,  # one image
    "max_request_pixels": 50_000_000,  # all images of one request (KServe: its instances)
    "max_batch_pixels": 100_000_000,  # all requests of one TorchServe batch
    "max_instances": 16,  # images in one KServe v1 request
    "max_boxes": 100,  # crops (person boxes, or 1 for a whole image) of one request
    "max_batch_crops": 800,  # crops of one batch: it must finish inside responseTimeout
    "crops_per_forward": 128,  # crops in one forward pass
}
"""Pixels are decoded RGB bytes / 3; see docs/rest-api.md for how the batch limits are sized."""
BATCH_TIME_SHARE = 0.5
"""Share of responseTimeout a full batch may take: room for decoding and a busy node."""
JSON_KEYS = {"image", "boxes", "box_format"}
FORM_FIELDS = {"boxes", "box_format"}
MANGLED_FORM = (
    "the body arrived as a URL-encoded form, which TorchServe decodes as text and so corrupts "
    "image bytes: curl --data-binary sends Content-Type application/x-www-form-urlencoded "
    "unless told otherwise. Send the image with `curl -T photo.jpg`, with "
    "`-H 'Content-Type: image/jpeg' --data-binary @photo.jpg`, or as `-F image=@photo.jpg`"
)
EXIF_ORIENTATION = 0x0112
log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request that cannot be served; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def open_image(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    """Image bytes -> (lazily decoded Pillow image, upright width, upright height).

    Only the header is read, so the pixel count is known before any pixel is
    decoded: a small file that expands to gigabytes (a decompression bomb) costs nothing.
    """
    if not data:
        raise RequestError("empty image: the request holds no image bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise RequestError(
            "not a supported image: send JPEG, PNG, WebP or BMP bytes", status=415
        ) from None
    except Image.DecompressionBombError as err:
        raise RequestError(f"image too large: {err}", status=413) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"cannot read the image header: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(
            f"image too large: {width}x{height} is {width * height} pixels, more than the "
            f"limit of {max_pixels} (max_pixels)",
            status=413,
        )
    if width == 0 or height == 0:
        raise RequestError(f"image has no pixels ({width}x{height})")
    if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # stored sideways
        width, height = height, width
    return image, width, height


def decode_image(image: Image.Image) -> np.ndarray:
    """An opened image -> upright H x W x 3 uint8 RGB; refuses what is not a whole photo."""
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(f"cannot decode the {image.format} image: {err}") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 RGB: 16-bit scaled (not clipped) to 8, alpha over white.

    Integer and float images are scaled in their own 4-byte type, in place: a float64 copy
    would take 8 bytes a pixel on top of the decoded image.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = np.array(image, dtype=np.float32 if image.mode == "F" else np.int32)
        if gray.max(initial=0) > 255:
            if image.mode == "F":
                gray /= 257.0
                np.rint(gray, out=gray)
            else:  # round(v / 257) in integers: 0..65535 -> 0..255
                np.clip(gray, 0, 65535, out=gray)
                gray += 128
                gray //= 257
        np.clip(gray, 0, 255, out=gray)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"))


def parse_boxes(
    value: Any, box_format: Any, width: int, height: int, max_boxes: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validated person boxes as (N, 4) x, y, w, h and (N,) scores; (None, None) for none given.

    A box is [x, y, w, h] (or [x1, y1, x2, y2] with ``box_format`` "xyxy"), optionally
    followed by a detector score in [0, 1]. It must be at least 1 px wide and high,
    overlap the image, and keep its edges within the image extended by its own width
    and height on every side: a box of 1e308 px would give infinite keypoints.
    """
    if box_format not in ("xywh", "xyxy"):
        raise RequestError(f"box_format must be 'xywh' or 'xyxy', not {box_format!r}")
    if value is None:
        return None, None
    if not isinstance(value, list):
        raise RequestError("boxes must be a list of [x, y, w, h] boxes")
    if len(value) > max_boxes:
        raise RequestError(
            f"too many boxes: {len(value)}, at most {max_boxes} per request (max_boxes)"
        )
    boxes, scores = [], []
    for i, box in enumerate(value):
        try:
            (x1, y1, w, h), score = parse_box(box, box_format=box_format)
        except BoxError as err:
            raise RequestError(f"box #{i} {err}") from None
        x2, y2 = x1 + w, y1 + h
        if not (w >= 1 and h >= 1):
            raise RequestError(
                f"box #{i} {json.dumps(box)} ({box_format}) is under 1 px wide or high"
            )
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise RequestError(
                f"box #{i} {json.dumps(box)} ({box_format}) lies outside the {width}x{height} image"
            )
        if x1 < -width or y1 < -height or x2 > 2 * width or y2 > 2 * height:
            raise RequestError(
                f"box #{i} {json.dumps(box)} ({box_format}) reaches further than the "
                f"{width}x{height} image's own size beyond its edges"
            )
        if not 0 <= score <= 1:
            raise RequestError(f"box #{i} {json.dumps(box)}: score {score} is not in [0, 1]")
        boxes.append([x1, y1, w, h])
        scores.append(score)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)


def _json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"malformed JSON in {what}: {err}") from None


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value


def read_form(row: dict[str, Any]) -> tuple[bytes, Any, Any]:
    """A multipart form -> (image bytes, boxes or None, box format).

    The image is the ``image`` field, or the form's only other field (``-F file=@photo.jpg``).
    A URL-encoded body (curl --data-binary without a Content-Type) reaches us as form fields
    whose bytes TorchServe already decoded as UTF-8 text, replacing what was not text with
    U+FFFD: that image is lost, and the answer says how to send it.
    """
    if any("\ufffd" in name for name in row) or any(
        b"\xef\xbf\xbd" in value for value in row.values() if isinstance(value, bytes | bytearray)
    ):
        raise RequestError(MANGLED_FORM, status=415)
    others = [name for name in row if name not in FORM_FIELDS]
    name = "image" if "image" in row else others[0] if len(others) == 1 else None
    if name is None or not isinstance(row[name], bytes | bytearray):
        names = ", ".join(sorted(row)) or "none"
        raise RequestError(
            "empty request: send image bytes, a multipart form with an 'image' file, or JSON "
            f'{{"image": base64, "boxes": [...]}} (form fields received: {names})'
        )
    boxes = row.get("boxes")
    if isinstance(boxes, bytes | bytearray | str):
        boxes = _json(boxes, "form field 'boxes'")
    return bytes(row[name]), boxes, _text(row.get("box_format", "xywh"))


def read_request(row: dict[str, Any]) -> tuple[bytes, Any, Any]:
    """One request row -> (image bytes, boxes or None, box format).

    TorchServe hands a handler one dict per request: ``body`` (or ``data``) for a
    raw or JSON body, one key per field for a form; under KServe's envelope, one
    row is one instance, our JSON object itself.
    """
    if isinstance(row.get("image"), bytes | bytearray):
        return read_form(row)
    body = row.get("body", row.get("data", row if "image" in row else None))
    if body is None:
        return read_form(row)
    if isinstance(body, bytes | bytearray):
        if not body:
            raise RequestError("empty request body: send image bytes or JSON")
        if not _looks_like_json(body):
            return bytes(body), None, "xywh"
        body = _json(bytes(body), "the request body")
    elif isinstance(body, str):
        body = _json(body, "the request body")
    if not isinstance(body, dict):
        raise RequestError(
            'a JSON request must be an object {"image": base64, "boxes": [...], "box_format": ...}'
        )
    unknown = sorted(set(body) - JSON_KEYS)
    if unknown:
        raise RequestError(
            f"unknown JSON key(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(sorted(JSON_KEYS))}"
        )
    encoded = body.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestError("JSON key 'image' must hold the image as a base64 string")
    if encoded.startswith("data:") and "," in encoded:  # a data URL
        encoded = encoded.split(",", 1)[1]
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"JSON key 'image' is not valid base64: {err}") from None
    return image, body.get("boxes"), body.get("box_format", "xywh")


class Item:
    """One image to predict: its opened (not yet decoded) image, size, boxes and scores."""

    def __init__(self, image: Image.Image, width: int, height: int, boxes, scores):
        self.image, self.width, self.height = image, width, height
        self.boxes, self.scores = boxes, scores
        self.pixels = width * height
        self.crops = 1 if boxes is None else len(boxes)
        self.rgb: np.ndarray | None = None  # decoded once the request is admitted


def read_item(row: Any, limits: dict[str, int]) -> Item:
    """One row (a request, or a KServe instance) -> its Item, from headers and boxes only."""
    if not isinstance(row, dict):
        raise RequestError('each instance must be an object {"image": base64, "boxes": [...]}')
    image_bytes, boxes, box_format = read_request(row)
    image, width, height = open_image(image_bytes, limits["max_pixels"])
    return Item(
        image, width, height, *parse_boxes(boxes, box_format, width, height, limits["max_boxes"])
    )


def check_instances(count: int, limits: dict[str, int]) -> None:
    """Refuse a KServe request with more instances than ``max_instances``, before reading any."""
    if count > limits["max_instances"]:
        raise RequestError(
            f"too many instances: {count}, at most {limits['max_instances']} per request "
            "(max_instances)",
            status=413,
        )


def check_request(items: list[Item], limits: dict[str, int], detected: bool = False) -> None:
    """Refuse a request (all its instances) over the per-request limits (413, naming the limit);
    ``detected``: its crops include the persons the detector found."""
    pixels = sum(item.pixels for item in items)
    if pixels > limits["max_request_pixels"]:
        raise RequestError(
            f"images too large: {pixels} pixels in one request, more than the limit of "
            f"{limits['max_request_pixels']} (max_request_pixels)",
            status=413,
        )
    crops = sum(item.crops for item in items)
    if crops > limits["max_boxes"]:
        found = " (with the persons the detector found)" if detected else ""
        raise RequestError(
            f"too many boxes: {crops} crops{found} in one request, at most "
            f"{limits['max_boxes']} (max_boxes)"
        )


def admit(requests: list[list[Item] | RequestError], limits: dict[str, int]) -> None:
    """Refuse, in place and in arrival order, the requests that would take their batch over
    ``max_batch_pixels`` or ``max_batch_crops`` (429: the same request alone fits)."""
    pixels = crops = 0
    for i, items in enumerate(requests):
        if isinstance(items, RequestError):
            continue
        more_pixels = sum(item.pixels for item in items)
        more_crops = sum(item.crops for item in items)
        for used, more, limit in (
            (pixels, more_pixels, "max_batch_pixels"),
            (crops, more_crops, "max_batch_crops"),
        ):
            if used + more > limits[limit]:
                requests[i] = RequestError(
                    f"server busy: this request would take its batch over {limits[limit]} "
                    f"{limit.removeprefix('max_batch_')} ({limit}); retry it",
                    status=429,
                )
                break
        else:
            pixels, crops = pixels + more_pixels, crops + more_crops


def finite(value: Any) -> bool:
    """Whether a JSON-able answer holds only finite numbers (json.dumps would write NaN)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def read_limits(settings: dict[str, Any]) -> dict[str, int]:
    """The handler section of model-config.yaml over ``DEFAULTS``; refuses limits under which
    a request that passes the per-request limits could never fit a batch."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"model-config.yaml handler: unknown key(s) {', '.join(unknown)}")
    limits = {key: int(value) for key, value in (DEFAULTS | settings).items()}
    for one, many in (
        ("max_pixels", "max_request_pixels"),
        ("max_request_pixels", "max_batch_pixels"),
        ("max_boxes", "max_batch_crops"),
    ):
        if limits[one] > limits[many]:
            raise ValueError(
                f"model-config.yaml handler: {one} ({limits[one]}) is larger than {many} "
                f"({limits[many]}), so some valid requests could never be served"
            )
    return limits


def crop_rate(model: torch.nn.Module, cfg: Any, crops: int = 4, precision: str = "fp32") -> float:
    """Crops per second of this model on this worker at ``precision`` (test-time flip
    included): one warm-up pass, then ``crops`` crops timed in one forward pass."""
    width, height = cfg.model.input_size
    image = np.zeros((height, width, 3), np.uint8)
    boxes = [[0, 0, width, height]] * crops
    with torch.inference_mode():
        predict_images(model, cfg, [image], [None], [None], precision=precision)
        start = time.perf_counter()
        predict_images(model, cfg, [image], [boxes], [None], precision=precision)
    return crops / (time.perf_counter() - start)


def cap_crops(limits: dict[str, int], rate: float, response_timeout: float) -> None:
    """Lower ``max_batch_crops`` (and ``max_boxes`` with it) to what this worker can run in
    ``BATCH_TIME_SHARE`` of TorchServe's responseTimeout: past it TorchServe kills the worker
    and every request of the batch fails."""
    cap = max(1, int(rate * response_timeout * BATCH_TIME_SHARE))
    limits["max_batch_crops"] = min(limits["max_batch_crops"], cap)
    limits["max_boxes"] = min(limits["max_boxes"], limits["max_batch_crops"])


class PoseHandler(BaseHandler):
    """IHL keypoints for TorchServe; see the module docstring for the request forms."""

    precision = "fp32"

    def initialize(self, context):
        yaml_config = context.model_yaml_config or {}
        settings = dict(yaml_config.get("handler") or {})
        self.precision = str(settings.pop("precision", "fp32"))
        self.limits = read_limits(settings)
        properties = context.system_properties
        gpu = properties.get("gpu_id")
        # TorchServe hands out a gpu_id when it sees GPUs: one that CUDA cannot use fails the
        # worker with the driver versions instead of serving on the CPU.
        self.device = resolve_device("cpu" if gpu is None else f"cuda:{gpu}")
        model_dir = Path(properties["model_dir"])
        self.manifest = context.manifest
        self.model, self.cfg = load_model(model_dir / self.manifest["model"]["serializedFile"])
        self.model.to(self.device).eval()
        runtime = "torch"
        if (model_dir / "pose.onnx").is_file() and self.device.type == "cpu":
            from ihl.runtime import OnnxPoseModel

            self.model = OnnxPoseModel(model_dir / "pose.onnx", self.cfg.model)
            runtime = "onnx"
        # fp16 on a CPU worker, or reduced precision under ONNX Runtime, fails the worker here
        check_precision(self.precision, self.device, runtime)
        self.detector = None
        if (model_dir / "detector.onnx").is_file() and self.device.type == "cpu":
            from ihl.detection.onnx import OnnxDetector

            onnx_detector = OnnxDetector(model_dir / "detector.onnx")
            self.detector = (onnx_detector, onnx_detector.cfg)
        elif (model_dir / "detector.pt").is_file():
            model, detector_cfg = load_detector(model_dir / "detector.pt")
            self.detector = (model.to(self.device), detector_cfg)
        rate = crop_rate(self.model, self.cfg, precision=self.precision)
        cap_crops(self.limits, rate, float(yaml_config.get("responseTimeout", 120)))
        log.info(
            "%.1f crops/s on %s in %s: limits %s", rate, self.device, self.precision, self.limits
        )
        joints = json.loads((model_dir / "keypoints.json").read_text())
        self.header = {
            "keypoint_names": joints["keypoint_names"],
            "skeleton": joints["skeleton"],
        }
        self.model_info = {
            "name": self.manifest["model"]["modelName"],
            "version": self.manifest["model"].get("modelVersion", ""),
        }
        self.initialized = True

    def _requests(self) -> int:
        return len(self.context.request_processor or [])

    def _envelope(self, rows: list) -> bool:
        """Under a request envelope (KServe v1) the rows are one request's instances."""
        return self._requests() != len(rows)

    def preprocess(self, data):
        """Rows -> one entry per row: an Item, or the RequestError that refuses it.

        Every limit is checked from headers and boxes first; only the images of admitted
        requests are decoded (into ``Item.rgb``).
        """
        groups = (
            [list(range(len(data)))] if self._envelope(data) else [[i] for i in range(len(data))]
        )
        requests: list[list[Item] | RequestError] = []
        for rows in groups:
            try:
                check_instances(len(rows), self.limits)
                items = [read_item(data[i], self.limits) for i in rows]
                check_request(items, self.limits)
                requests.append(items)
            except RequestError as err:
                requests.append(err)
            except Exception as err:  # a decoder's surprise must not fail the whole batch
                log.exception("unreadable request")
                requests.append(RequestError(f"cannot read the request: {type(err).__name__}"))
        admit(requests, self.limits)
        parsed: list[Item | RequestError] = []
        for rows, items in zip(groups, requests, strict=True):
            if isinstance(items, RequestError):
                parsed += [items] * len(rows)
                continue
            try:
                for item in items:
                    item.rgb, item.image = decode_image(item.image), None
                parsed += items
            except RequestError as err:
                parsed += [err] * len(rows)
            except Exception as err:
                log.exception("undecodable request")
                parsed += [RequestError(f"cannot decode the image: {type(err).__name__}")] * len(
                    rows
                )
        return parsed

    def _predict(self, items: list[Item]) -> list[list[dict]]:
        return predict_images(
            self.model,
            self.cfg,
            [item.rgb for item in items],
            [item.boxes for item in items],
            [item.scores for item in items],
            batch_size=self.limits["crops_per_forward"],
            precision=self.precision,
        )

    def _predict_alone(self, items: list[Item]) -> list[list[dict] | RequestError]:
        """After a failed batch: each item on its own, so only the one at fault fails."""
        results: list[list[dict] | RequestError] = []
        for item in items:
            try:
                results += self._predict([item])
            except Exception as err:
                log.exception("a request failed on its own")
                results.append(
                    RequestError(f"the model failed on this request: {type(err).__name__}", 500)
                )
        return results

    def inference(self, parsed):
        """All crops of the batch's valid requests through the network together."""
        valid = [p for p in parsed if not isinstance(p, RequestError)]
        start = time.perf_counter()
        self._detect(valid)
        parsed = self._admit_detected(parsed)
        valid = [p for p in parsed if not isinstance(p, RequestError)]
        detected = time.perf_counter()
        try:
            people = self._predict(valid)
        except Exception:
            log.exception("batch of %d failed; retrying each request alone", len(valid))
            people = self._predict_alone(valid)
        crops = sum(item.crops for item in valid)
        log.info(
            "batch of %d requests (%d refused): detect %.1f ms, %d crops in %.1f ms",
            len(parsed), len(parsed) - len(valid), 1000 * (detected - start), crops,
            1000 * (time.perf_counter() - detected),
        )  # fmt: skip
        people = iter(people)
        return [p if isinstance(p, RequestError) else next(people) for p in parsed]

    def _detect(self, items: list[Item]) -> None:
        """Items without boxes get the detector's persons (at most ``max_boxes``, best first),
        all their images in one forward."""
        unboxed = [item for item in items if item.boxes is None]
        if self.detector is None or not unboxed:
            return
        model, cfg = self.detector
        found = detect(model, [item.rgb for item in unboxed], cfg)
        for item, (boxes, scores) in zip(unboxed, found, strict=True):
            keep = self.limits["max_boxes"]
            item.boxes, item.scores, item.crops = boxes[:keep], scores[:keep], len(boxes[:keep])

    def _admit_detected(self, parsed: list[Item | RequestError]) -> list[Item | RequestError]:
        """The limits on crops checked again once the detector has found its persons, as
        ``preprocess`` checks given boxes: a request over ``max_boxes`` is refused, and the
        requests that would take the batch over ``max_batch_crops`` get 429, in arrival
        order. ``preprocess`` counted each image without boxes as one crop."""
        if self._envelope(parsed):
            groups = [parsed]
        else:
            groups = [[p] for p in parsed]
        requests: list[list[Item] | RequestError] = []
        for group in groups:
            if isinstance(group[0], RequestError):
                requests.append(group[0])
                continue
            try:
                check_request(group, self.limits, detected=True)
                requests.append(group)
            except RequestError as err:
                requests.append(err)
        admit(requests, self.limits)
        out: list[Item | RequestError] = []
        for group, items in zip(groups, requests, strict=True):
            out += [items] * len(group) if isinstance(items, RequestError) else items
        return out

    def postprocess(self, results):
        out = []
        for idx, result in enumerate(results):
            self._set_content_type(idx)
            if not isinstance(result, RequestError):
                body = {"persons": result, **self.header, "model": self.model_info}
                if finite(body):
                    out.append(body)
                    continue
                result = RequestError("the model gave non-finite keypoints for this request", 500)
            self._set_status(idx, result.status)
            out.append({"code": result.status, "error": str(result)})
        return out

    def _set_content_type(self, idx: int) -> None:
        if idx < self._requests():
            self.context.set_response_content_type(idx, "application/json")

    def _set_status(self, idx: int, status: int) -> None:
        """Per-request status; under a request envelope (KServe, several instances in one
        request) rows are instances, so a bad instance fails its whole request."""
        phrase = HTTPStatus(status).phrase
        if not self._envelope(self._rows):
            self.context.set_response_status(status, phrase, idx)
        else:
            self.context.set_all_response_status(status, phrase)

    def handle(self, data, context):
        self.context = context
        self._rows = data
        with torch.inference_mode():
            return self.postprocess(self.inference(self.preprocess(data)))


_service = PoseHandler()


def handle(data, context):
    """TorchServe's entry point (the module holds two classes, so it is named): the first call,
    with no data, loads the model."""
    if not _service.initialized:
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)
