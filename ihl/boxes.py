"""One rule for a person box, wherever it comes from: annotations, box files, requests."""

from __future__ import annotations

import json
import math
from typing import Any


class BoxError(ValueError):
    """A box that is not finite numbers of positive size; the message quotes the box, and
    each caller prefixes where it was found."""


def parse_box(
    value: Any, *, box_format: str = "xywh", scored: bool = True
) -> tuple[list[float], float]:
    """``([x, y, w, h], score)`` from ``[x, y, w, h]`` or, when ``scored``, ``[x, y, w, h, score]``
    (score 1.0 when absent). With ``box_format`` "xyxy" the box is ``[x1, y1, x2, y2]``.
    Booleans are not numbers here, though Python counts them as ints."""
    shown = json.dumps(value, default=str)
    if box_format != "xywh":
        shown += f" ({box_format})"
    sizes = (4, 5) if scored else (4,)
    if not isinstance(value, list | tuple) or len(value) not in sizes:
        expected = "[x, y, w, h] or [x, y, w, h, score]" if scored else "[x, y, w, h]"
        raise BoxError(f"{shown} is not {expected}")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise BoxError(f"{shown} holds a non-numeric or non-finite value")
    x, y, w, h = (float(v) for v in value[:4])
    if box_format == "xyxy":
        w, h = w - x, h - y
    if not all(math.isfinite(v) for v in (w, h, x + w, y + h)):  # 1e308 - -1e308 is inf
        raise BoxError(f"{shown} has an edge or a size beyond floating point range (non-finite)")
    if w <= 0 or h <= 0:
        raise BoxError(f"{shown} has zero or negative size")
    return [x, y, w, h], float(value[4]) if len(value) == 5 else 1.0
