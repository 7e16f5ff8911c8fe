"""Decoding and warping on the device, the ``data.decode: device`` option of training.

The loader workers read each file and draw its crop's geometry and targets exactly as
the CPU path does, but leave the pixels alone: they ship the encoded bytes and the 2x3
matrix of the warp. The training process then decodes the batch where it trains (nvJPEG
through torchvision on CUDA, one batched call) and warps each image to its crop with
``grid_sample``. On the CPU path a JPEG decode is most of a sample's cost, so the workers
a GPU needs shrink accordingly (docs/benchmarks.md).

The crop matches ``transforms.warp`` (cv2.warpAffine: bilinear, black outside, pixel
centres at integer coordinates); the two differ only by OpenCV's fixed-point
interpolation, well under one grey level on average (tests/data/test_device_decode.py).
Samples keep the CPU path's uint8 RGB crop, so nothing after the decode changes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from .errors import DatasetError
from .transforms import Size

ENCODED, LENGTHS, AFFINE, SOURCE = "encoded", "encoded_lengths", "affine", "source"
"""Keys of this path: the file's bytes (uint8; a batch holds its files end to end, and their
lengths), the matrix from stored image pixels to crop pixels (2x3 float64), and how errors
name the file."""

_JPEG_START = (0xFF, 0xD8)
_EXIF_TAG_ORIENTATION = 0x0112


def encoded_sample(data: np.ndarray, sample: dict, matrix: np.ndarray, source: str) -> dict:
    """A worker's sample without pixels: ``sample`` (``TopDownPipeline.geometry``'s targets
    and geometry) plus the file's bytes and the warp from its stored pixels to the crop.

    OpenCV turns an image by its EXIF orientation before the CPU path warps it; the
    device decoders do not, so the turn is composed into the matrix here instead.
    """
    orientation = exif_orientation(data)
    if orientation is not None:
        matrix = matrix @ orientation
    sample[ENCODED] = torch.from_numpy(data)
    sample[AFFINE] = torch.from_numpy(np.ascontiguousarray(matrix[:2], dtype=np.float64))
    sample[SOURCE] = source
    return sample


def exif_orientation(data: np.ndarray) -> np.ndarray | None:
    """The 3x3 matrix from an image's stored pixels to its upright pixels (EXIF orientation
    2-8), or None when it is stored upright. A JPEG without an Exif block costs one search
    of its header; other formats are rare in pose datasets and always ask Pillow."""
    jpeg = tuple(data[:2]) == _JPEG_START
    if jpeg and b"Exif" not in data[:65536].tobytes():
        return None
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_TAG_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return None  # undecodable files fail, named, where they are decoded
    w, h = width - 1, height - 1
    # Where stored pixel (x, y) lands, as rows (x', y') = A @ (x, y, 1); see the EXIF spec.
    turns = {
        2: [[-1, 0, w], [0, 1, 0]],
        3: [[-1, 0, w], [0, -1, h]],
        4: [[1, 0, 0], [0, -1, h]],
        5: [[0, 1, 0], [1, 0, 0]],
        6: [[0, -1, h], [1, 0, 0]],
        7: [[0, -1, h], [-1, 0, w]],
        8: [[0, 1, 0], [-1, 0, w]],
    }
    if orientation not in turns:
        return None
    return np.vstack([np.asarray(turns[orientation], dtype=np.float64), [0.0, 0.0, 1.0]])


def collate(samples: list[dict]) -> dict:
    """``default_collate``, except that encoded files, one length each, are laid end to end
    in one tensor: a batch then crosses from the worker in one shared-memory segment rather
    than one per file (each an open file descriptor while it waits in the queue)."""
    if ENCODED not in samples[0]:
        return default_collate(samples)
    batch = default_collate([{k: v for k, v in s.items() if k != ENCODED} for s in samples])
    batch[ENCODED] = torch.cat([s[ENCODED] for s in samples])
    batch[LENGTHS] = torch.tensor([len(s[ENCODED]) for s in samples])
    return batch


def batch_images(batch: dict, input_size: Size, device: torch.device) -> Tensor:
    """The batch's crops (N, 3, H, W) uint8 RGB on ``device``: copied when the workers made
    them, decoded and warped there when they shipped encoded files."""
    if "image" in batch:
        return batch["image"].to(device, non_blocking=True)
    files = list(torch.split(batch[ENCODED], batch[LENGTHS].tolist()))
    images = decode_batch(files, device, batch[SOURCE])
    return warp_batch(images, batch[AFFINE], input_size)


def decode_batch(encoded: list[Tensor], device: torch.device, sources: list[str]) -> list[Tensor]:
    """Decode files (1-D uint8 CPU tensors) into (3, H, W) uint8 RGB images on ``device``.

    JPEGs go to ``decode_jpeg`` in one call (nvJPEG's batched decode on CUDA); other
    formats, and JPEGs nvJPEG refuses (CMYK, for one), are decoded on the CPU and copied.
    """
    device = torch.device(device)
    out: list[Tensor | None] = [None] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if tuple(data[:2].tolist()) == _JPEG_START]
    if jpegs:
        try:
            with _quiet():
                decoded = decode_jpeg(
                    [encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device
                )
        except RuntimeError:
            decoded = None  # one bad file fails the whole call; find it one by one below
        if decoded is not None:
            for i, image in zip(jpegs, decoded, strict=True):
                out[i] = image
    for i, image in enumerate(out):
        if image is None:
            out[i] = _decode_on_cpu(encoded[i], sources[i]).to(device, non_blocking=True)
    return out


def _decode_on_cpu(data: Tensor, source: str) -> Tensor:
    try:
        with _quiet():
            image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise DatasetError(f"{source}: cannot decode image: {err}") from None
    if image.dtype != torch.uint8:  # 16-bit PNG: keep the high byte, as OpenCV does
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchvision 0.29 deprecates its decoders for TorchCodec's, and says so at every call;
    they remain the ones that decode a batch with nvJPEG."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def warp_batch(images: list[Tensor], matrices: Tensor, output_size: Size) -> Tensor:
    """Warp each (3, H, W) uint8 image by its 2x3 matrix (image to crop pixels) into an
    ``output_size`` crop: bilinear, zero outside the image, rounded to uint8.

    Each crop pixel centre (x, y) samples the image at inverse(matrix) @ (x, y, 1), pixel
    centres at integer coordinates as in cv2.warpAffine; ``grid_sample`` with
    ``align_corners=False`` puts pixel i's centre at (2i + 1) / size - 1.
    """
    out_w, out_h = (int(v) for v in output_size)
    device = images[0].device
    square = torch.zeros(len(images), 3, 3, dtype=torch.float64)
    square[:, :2] = matrices.to(torch.float64)
    square[:, 2, 2] = 1.0
    to_image = torch.linalg.inv(square)[:, :2].to(device, torch.float32)
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=device),
        torch.arange(out_w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    points = torch.einsum("hwk,nik->nhwi", pixels, to_image)
    crops = torch.empty(len(images), 3, out_h, out_w, dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        _, height, width = image.shape
        x, y = points[i].unbind(-1)
        grid = torch.stack(((2.0 * x + 1.0) / width - 1.0, (2.0 * y + 1.0) / height - 1.0), -1)
        crop = F.grid_sample(
            image[None].float(),
            grid[None],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        crops[i] = crop[0].round_().clamp_(0, 255).to(torch.uint8)
    return crops
