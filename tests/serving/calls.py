"""Calling the pose service as TorchServe's handler does, in this process: a ``Context`` that
records each request's status and content type, the shipped limits, and small images."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ihl.edge.serving.limits import read_limits

REPO = Path(__file__).resolve().parents[2]


def shipped_limits() -> dict[str, int]:
    """The limits serving/model-config.yaml ships (``precision`` aside)."""
    handler = yaml.safe_load((REPO / "serving" / "model-config.yaml").read_text())["handler"]
    return read_limits({k: v for k, v in handler.items() if k != "precision"})


class Context:
    """TorchServe's context as the service uses it: one entry per HTTP request."""

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


def call(service, rows, requests=None):
    """(answers, statuses) for ``rows``; ``requests`` < len(rows) means a KServe envelope."""
    context = Context(len(rows) if requests is None else requests)
    answers = service.handle(rows, context)
    for answer in answers:
        json.dumps(answer, allow_nan=False)  # every answer is valid JSON
    statuses = [context.status.get(i, 200) for i in range(len(context.request_processor))]
    return answers, statuses


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def noise_png(seed: int, shape: tuple[int, int] = (64, 64)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def instance(data: bytes, boxes=None) -> dict:
    row = {"image": base64.b64encode(data).decode()}
    return row if boxes is None else row | {"boxes": boxes}
