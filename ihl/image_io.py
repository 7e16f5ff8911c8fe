"""Reading image files: one decoder for datasets, prediction and drawing, refusing broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ihl.data.errors import DatasetError

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def read_image_bgr(path: str | Path, record: str = "") -> np.ndarray:
    """Decode an image file to a uint8 BGR array, refusing broken files (``read_image_file``)."""
    data = read_image_file(path, record)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise DatasetError(f"{describe(path, record)}: cannot decode image")
    return image


def describe(path: str | Path, record: str = "") -> str:
    """How errors name an image: its path, and the record it belongs to when given."""
    return f"{path}{f' ({record})' if record else ''}"


def read_image_file(path: str | Path, record: str = "") -> np.ndarray:
    """The encoded bytes of an image file (uint8), refusing empty and truncated files.

    OpenCV decodes a truncated JPEG into a partly grey image with only a
    warning, so JPEGs must also end with their end-of-image marker (trailing
    padding after it is tolerated). Loader workers that leave decoding to the
    GPU (``data.decode: device``) check files this way too.
    """
    where = describe(path, record)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise DatasetError(f"{where}: cannot read image: {err.strerror or err}") from err
    if data.size == 0:
        raise DatasetError(f"{where}: image file is empty")
    head = data[:2].tobytes()
    if head == _JPEG_START and _JPEG_END not in data[-1024:].tobytes():
        raise DatasetError(f"{where}: truncated JPEG (no end-of-image marker)")
    return data


def image_problem(path: Path, record: str, decode: bool = True) -> str | None:
    """What is wrong with one image file, None if nothing: for the dataset checks.

    Without ``decode`` only that the file exists is checked (fast).
    """
    if not decode:
        return None if path.is_file() else f"{path}: image file not found ({record})"
    try:
        read_image_bgr(path, record)
    except DatasetError as err:
        return str(err)
    return None
