"""TorchServe handler: images (and optional person boxes) in, COCO keypoints out.

One request is raw image bytes, a multipart form with an ``image`` file and
optional ``boxes`` (and ``box_format``) fields, or a JSON object
``{"image": base64, "boxes": [[x, y, w, h], ...], "box_format": "xywh"|"xyxy"}``.
Without boxes the archive's person detector (``detector.pt``) finds the persons,
or, in an archive without one, the whole image is one person box; ``"boxes": []``
means nobody. Each person in the answer carries its ``box_score`` (the
detector's, or the one given with the box, 1 by default). An archive with
``pose.onnx`` runs the pose model under ONNX Runtime (CPU). Every crop of every request
in a TorchServe batch goes through the network together; a request that
cannot be served gets its own 4xx status and a JSON error while the others in
its batch are answered normally.

Limits come from the ``handler`` section of the archive's model-config.yaml
(``max_pixels``, ``max_boxes``, ``crops_per_forward``); the joint names and
skeleton from the archive's ``keypoints.json``. The model, crops, flip test
and mapping back to image pixels are ``ihl``'s own (``ihl.predict``).
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
from ihl.predict import predict_images

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
"""Decoders Pillow may use: the photo formats served, nothing more (no EPS, no PDF)."""
DEFAULTS = {"max_pixels": 50_000_000, "max_boxes": 100, "crops_per_forward": 128}
JSON_KEYS = {"image", "boxes", "box_format"}
log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request that cannot be served; ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image bytes -> upright H x W x 3 uint8 RGB, refusing anything that is not a whole photo.

    The pixel count is checked from the header, before any pixel is decoded, so a
    small file that expands to gigabytes (a decompression bomb) costs nothing.
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
            f"limit of {max_pixels}",
            status=413,
        )
    if width == 0 or height == 0:
        raise RequestError(f"image has no pixels ({width}x{height})")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(f"cannot decode the {image.format} image: {err}") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 RGB: 16-bit scaled (not clipped) to 8, alpha over white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = np.asarray(image, dtype=np.float64)
        if gray.max(initial=0) > 255:
            gray = gray / 257.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"))


def parse_boxes(
    value: Any, box_format: Any, width: int, height: int, max_boxes: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validated person boxes as (N, 4) x, y, w, h and (N,) scores; (None, None) for none given.

    A box is [x, y, w, h] (or [x1, y1, x2, y2] with ``box_format`` "xyxy"), optionally
    followed by a detector score in [0, 1]. It must have a positive size and
    overlap the image.
    """
    if box_format not in ("xywh", "xyxy"):
        raise RequestError(f"box_format must be 'xywh' or 'xyxy', not {box_format!r}")
    if value is None:
        return None, None
    if not isinstance(value, list):
        raise RequestError("boxes must be a list of [x, y, w, h] boxes")
    if len(value) > max_boxes:
        raise RequestError(f"too many boxes: {len(value)}, at most {max_boxes} per request")
    boxes, scores = [], []
    for i, box in enumerate(value):
        try:
            (x, y, w, h), score = parse_box(box, box_format=box_format)
        except BoxError as err:
            raise RequestError(f"box #{i} {err}") from None
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise RequestError(
                f"box #{i} {json.dumps(box)} ({box_format}) lies outside the {width}x{height} image"
            )
        if not 0 <= score <= 1:
            raise RequestError(f"box #{i} {json.dumps(box)}: score {score} is not in [0, 1]")
        boxes.append([x, y, w, h])
        scores.append(score)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)


def _json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"malformed JSON in {what}: {err}") from None


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def read_request(row: dict[str, Any]) -> tuple[bytes, Any, Any]:
    """One request row -> (image bytes, boxes or None, box format).

    TorchServe hands a handler one dict per request: ``body`` (or ``data``) for a
    raw or JSON body, one key per field for a multipart form; under KServe's
    envelope, one row is one instance, our JSON object itself.
    """
    if isinstance(row.get("image"), bytes | bytearray):  # multipart form
        boxes = row.get("boxes")
        if isinstance(boxes, bytes | bytearray | str):
            boxes = _json(boxes, "form field 'boxes'")
        box_format = row.get("box_format", "xywh")
        if isinstance(box_format, bytes | bytearray):
            box_format = box_format.decode("utf-8", "replace")
        return bytes(row["image"]), boxes, box_format
    body = row.get("body", row.get("data", row if "image" in row else None))
    if body is None:
        names = ", ".join(sorted(row)) or "none"
        raise RequestError(
            "empty request: send image bytes, a multipart form with an 'image' file, or JSON "
            f'{{"image": base64, "boxes": [...]}} (form fields received: {names})'
        )
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


class PoseHandler(BaseHandler):
    """IHL keypoints for TorchServe; see the module docstring for the request forms."""

    def initialize(self, context):
        properties = context.system_properties
        gpu = properties.get("gpu_id")
        self.device = torch.device(
            f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
        )
        model_dir = Path(properties["model_dir"])
        self.manifest = context.manifest
        self.model, self.cfg = load_model(model_dir / self.manifest["model"]["serializedFile"])
        self.model.to(self.device).eval()
        if (model_dir / "pose.onnx").is_file() and self.device.type == "cpu":
            from ihl.runtime import OnnxPoseModel

            self.model = OnnxPoseModel(model_dir / "pose.onnx", self.cfg.model)
        self.detector = None
        if (model_dir / "detector.pt").is_file():
            model, detector_cfg = load_detector(model_dir / "detector.pt")
            self.detector = (model.to(self.device), detector_cfg)
        joints = json.loads((model_dir / "keypoints.json").read_text())
        settings = DEFAULTS | ((context.model_yaml_config or {}).get("handler") or {})
        self.max_pixels = int(settings["max_pixels"])
        self.max_boxes = int(settings["max_boxes"])
        self.crops_per_forward = int(settings["crops_per_forward"])
        self.header = {
            "keypoint_names": joints["keypoint_names"],
            "skeleton": joints["skeleton"],
        }
        self.model_info = {
            "name": self.manifest["model"]["modelName"],
            "version": self.manifest["model"].get("modelVersion", ""),
        }
        self.initialized = True

    def preprocess(self, data):
        """Each request -> (image, boxes, scores), or the RequestError that refuses it."""
        parsed = []
        for row in data:
            try:
                if not isinstance(row, dict):
                    raise RequestError(
                        'each instance must be an object {"image": base64, "boxes": [...]}'
                    )
                image_bytes, boxes, box_format = read_request(row)
                image = decode_image(image_bytes, self.max_pixels)
                height, width = image.shape[:2]
                parsed.append(
                    (image, *parse_boxes(boxes, box_format, width, height, self.max_boxes))
                )
            except RequestError as err:
                parsed.append(err)
            except Exception as err:  # a decoder's surprise must not fail the whole batch
                log.exception("unreadable request")
                parsed.append(RequestError(f"cannot read the request: {type(err).__name__}"))
        return parsed

    def inference(self, parsed):
        """All crops of the batch's valid requests through the network together."""
        valid = [p for p in parsed if not isinstance(p, RequestError)]
        start = time.perf_counter()
        valid = self._detect(valid)
        detected = time.perf_counter()
        people = iter(
            predict_images(
                self.model,
                self.cfg,
                [image for image, _, _ in valid],
                [boxes for _, boxes, _ in valid],
                [scores for _, _, scores in valid],
                batch_size=self.crops_per_forward,
            )
        )
        crops = sum(1 if boxes is None else len(boxes) for _, boxes, _ in valid)
        log.info(
            "batch of %d requests (%d refused): detect %.1f ms, %d crops in %.1f ms",
            len(parsed), len(parsed) - len(valid), 1000 * (detected - start), crops,
            1000 * (time.perf_counter() - detected),
        )  # fmt: skip
        return [p if isinstance(p, RequestError) else next(people) for p in parsed]

    def _detect(self, valid: list[tuple]) -> list[tuple]:
        """Requests without boxes get the detector's persons, all images in one forward."""
        unboxed = [i for i, (_, boxes, _) in enumerate(valid) if boxes is None]
        if self.detector is None or not unboxed:
            return valid
        model, cfg = self.detector
        found = detect(model, [valid[i][0] for i in unboxed], cfg)
        valid = list(valid)
        for i, (boxes, scores) in zip(unboxed, found, strict=True):
            valid[i] = (valid[i][0], boxes, scores)
        return valid

    def postprocess(self, results):
        out = []
        for idx, result in enumerate(results):
            self._set_content_type(idx)
            if isinstance(result, RequestError):
                self._set_status(idx, result.status)
                body = {"code": result.status, "error": str(result)}
            else:
                body = {"persons": result, **self.header, "model": self.model_info}
            out.append(body)
        return out

    def _requests(self) -> int:
        return len(self.context.request_processor or [])

    def _set_content_type(self, idx: int) -> None:
        if idx < self._requests():
            self.context.set_response_content_type(idx, "application/json")

    def _set_status(self, idx: int, status: int) -> None:
        """Per-request status; under a request envelope (KServe, several instances in one
        request) rows are instances, so a bad instance fails its whole request."""
        phrase = HTTPStatus(status).phrase
        if self._requests() == len(self._rows):
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
