"""Images from their headers first: size, shape and orientation are known before any pixel
is decoded, so a small file that expands to gigabytes (a decompression bomb) costs nothing.

Pillow's ``Image.open`` reads only the header; ``getexif()`` would not: on a PNG whose
EXIF chunk is not in the header it decodes the whole image to look for one. The
orientation is therefore read from the EXIF bytes the header holds (JPEG, WebP, a PNG's
``eXIf`` chunk before its pixels), and the same orientation is applied when decoding.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ihl.edge.serving.reading import RequestError, quote

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
"""Decoders Pillow may use: the photo formats served, nothing more (no EPS, no PDF)."""
EXIF_ORIENTATION = 0x0112
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)."""
SIDEWAYS = {TRANSPOSE[k] for k in (5, 6, 7, 8)}


class Opened:
    """An image known from its header: the lazily decoded Pillow image, its upright size
    and the transpose that makes it upright (None when it already is)."""

    def __init__(self, image: Image.Image, width: int, height: int, transpose):
        self.image, self.width, self.height, self.transpose = image, width, height, transpose


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation the header holds (1, upright, when none), without decoding."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes):
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        return int(exif.get(EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        return 1  # an unreadable EXIF block is no orientation


def open_image(data: bytes, max_pixels: int, max_aspect_ratio: float) -> Opened:
    """Image bytes -> its header's facts, checked against ``max_pixels`` and
    ``max_aspect_ratio`` (a 3000x1 image scales to zero pixels in the detector)."""
    if not data:
        raise RequestError("empty image: the request holds no image bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise RequestError(
            "not a supported image: send JPEG, PNG, WebP or BMP bytes", status=415
        ) from None
    except Image.DecompressionBombError as err:
        raise RequestError(f"image too large: {quote(str(err))}", status=413) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"cannot read the image header: {quote(str(err))}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(
            f"image too large: {width}x{height} is {width * height} pixels, more than the "
            f"limit of {max_pixels} (max_pixels)",
            status=413,
        )
    if width == 0 or height == 0:
        raise RequestError(f"image has no pixels ({width}x{height})")
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise RequestError(
            f"image shape {width}x{height} is more than {max_aspect_ratio:g} times longer "
            "than wide (max_aspect_ratio)"
        )
    transpose = TRANSPOSE.get(_orientation(image))
    if transpose in SIDEWAYS:
        width, height = height, width
    return Opened(image, width, height, transpose)


def decode_image(opened: Opened) -> np.ndarray:
    """An opened image -> upright H x W x 3 uint8 RGB; refuses what is not a whole photo."""
    image = opened.image
    try:
        image.load()
        if opened.transpose is not None:
            image = image.transpose(opened.transpose)
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(f"cannot decode the {image.format} image: {quote(str(err))}") from None


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
