"""One request row -> (image bytes, boxes, box format), and validated person boxes.

Every error is a ``RequestError`` whose message quotes the input in at most
``QUOTE_CHARS`` characters and is itself at most ``MESSAGE_CHARS`` long: a message
echoing a huge input would make the answer larger than TorchServe's
``max_response_size``, and TorchServe then fails the whole batch and restarts the worker.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from ihl.boxes import BoxError, parse_box

QUOTE_CHARS = 60
MESSAGE_CHARS = 500
JSON_KEYS = ("image", "boxes", "box_format")
FORM_FIELDS = ("boxes", "box_format")
MANGLED_FORM = (
    "the body arrived as a URL-encoded form, which TorchServe decodes as text and so corrupts "
    "image bytes: curl --data-binary sends Content-Type application/x-www-form-urlencoded "
    "unless told otherwise. Send the image with `curl -T photo.jpg`, with "
    "`-H 'Content-Type: image/jpeg' --data-binary @photo.jpg`, or as `-F image=@photo.jpg`"
)


class RequestError(Exception):
    """A request that cannot be served; ``status`` is its HTTP status. The message is cut
    to ``MESSAGE_CHARS``."""

    def __init__(self, message: str, status: int = 400):
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.status = status


class Refusal:
    """What is kept of a refused request: its status and message, never the exception, whose
    traceback would hold the frames (and images) that raised it."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message

    @classmethod
    def of(cls, err: RequestError) -> Refusal:
        return cls(err.status, str(err))


def quote(value: Any) -> str:
    """``value`` as JSON (or repr), cut to ``QUOTE_CHARS`` characters."""
    try:
        text = json.dumps(value, default=repr)
    except ValueError:  # a nesting too deep for json
        text = repr(type(value))
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text)} chars)"


def _quote_names(names) -> str:
    return quote(sorted(str(name) for name in names))


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
        raise RequestError(f"box_format must be 'xywh' or 'xyxy', not {quote(box_format)}")
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
        shown = f"box #{i} {quote(box)} ({box_format})"
        try:
            (x1, y1, w, h), score = parse_box(box, box_format=box_format)
        except BoxError as err:
            raise RequestError(f"{shown}: {err}") from None
        x2, y2 = x1 + w, y1 + h
        if not (w >= 1 and h >= 1):
            raise RequestError(f"{shown} is under 1 px wide or high")
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise RequestError(f"{shown} lies outside the {width}x{height} image")
        if x1 < -width or y1 < -height or x2 > 2 * width or y2 > 2 * height:
            raise RequestError(
                f"{shown} reaches further than the {width}x{height} image's own size beyond "
                "its edges"
            )
        if not 0 <= score <= 1:
            raise RequestError(f"{shown}: score {quote(score)} is not in [0, 1]")
        boxes.append([x1, y1, w, h])
        scores.append(score)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)


def _json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RequestError(f"malformed JSON in {what}: {quote(str(err))}") from None


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value


def read_form(row: dict[str, Any]) -> tuple[bytes, Any, Any]:
    """A multipart form -> (image bytes, boxes or None, box format).

    The image is the ``image`` field, or the form's only field besides ``boxes`` and
    ``box_format`` (``-F data=@photo.jpg``, ``-F file=@photo.jpg``); a form with any other
    field is refused, so that no field is silently ignored. A URL-encoded body (curl
    --data-binary without a Content-Type) reaches us as form fields whose bytes TorchServe
    already decoded as UTF-8 text, replacing what was not text with U+FFFD: that image is
    lost, and the answer says how to send it.
    """
    if any("\ufffd" in name for name in row) or any(
        b"\xef\xbf\xbd" in value for value in row.values() if isinstance(value, bytes | bytearray)
    ):
        raise RequestError(MANGLED_FORM, status=415)
    others = [name for name in row if name not in FORM_FIELDS]
    if len(others) != 1 or not isinstance(row[others[0]], bytes | bytearray):
        raise RequestError(
            "a form holds one image file and optionally 'boxes' and 'box_format' fields "
            f"(form fields received: {_quote_names(row)}); or send image bytes, or JSON "
            '{"image": base64, "boxes": [...]}'
        )
    boxes = row.get("boxes")
    if isinstance(boxes, bytes | bytearray | str):
        boxes = _json(boxes, "form field 'boxes'")
    return bytes(row[others[0]]), boxes, _text(row.get("box_format", "xywh"))


def read_json(body: Any) -> tuple[bytes, Any, Any]:
    """A JSON request (or one KServe instance) -> (image bytes, boxes or None, box format)."""
    if not isinstance(body, dict):
        raise RequestError(
            'a JSON request must be an object {"image": base64, "boxes": [...], "box_format": ...}'
        )
    unknown = set(body) - set(JSON_KEYS)
    if unknown:
        raise RequestError(
            f"unknown JSON key(s) {_quote_names(unknown)}; expected {', '.join(JSON_KEYS)}"
        )
    encoded = body.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestError("JSON key 'image' must hold the image as a base64 string")
    if encoded.startswith("data:") and "," in encoded:  # a data URL
        encoded = encoded.split(",", 1)[1]
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"JSON key 'image' is not valid base64: {quote(str(err))}") from None
    return image, body.get("boxes"), body.get("box_format", "xywh")


def read_request(row: Any) -> tuple[bytes, Any, Any]:
    """One request row -> (image bytes, boxes or None, box format).

    TorchServe hands a handler one dict per request: ``body`` for a raw or JSON body (a
    JSON body already parsed), one key per field for a form; under KServe's envelope one row
    is one instance, our JSON object itself (its ``image`` a base64 string).
    """
    if not isinstance(row, dict):
        raise RequestError('each instance must be an object {"image": base64, "boxes": [...]}')
    if isinstance(row.get("image"), str):
        return read_json(row)
    if "body" not in row:
        return read_form(row)
    if len(row) > 1:
        raise RequestError(
            f"request parameters cannot be used: {_quote_names(set(row) - {'body'})}; send "
            "boxes in a form or in JSON"
        )
    body = row["body"]
    if isinstance(body, bytes | bytearray):
        if not body:
            raise RequestError("empty request body: send image bytes or JSON")
        if body.lstrip()[:1] not in (b"{", b"["):
            return bytes(body), None, "xywh"
        body = _json(bytes(body), "the request body")
    elif isinstance(body, str):
        body = _json(body, "the request body")
    return read_json(body)
