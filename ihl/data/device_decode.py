"""Decoding and warping on the device, the ``data.decode: device`` option of training.

The loader workers read each file and draw its crop's geometry and targets exactly as
the CPU path does, but leave the pixels alone: they ship the encoded bytes and the 2x3
matrix of the warp. The training process then decodes the batch where it trains (nvJPEG
through torchvision on CUDA, one batched call) and warps the batch to its crops with one
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
from collections import Counter
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

DECODED: Counter[str] = Counter()
"""Files decoded so far in this process: ``device``, by ``decode_jpeg`` where the batch goes
(nvJPEG on CUDA); ``cpu``, on the CPU and copied there. Benchmarks report which ran."""

_JPEG_START = (0xFF, 0xD8)
_EXIF_TAG_ORIENTATION = 0x0112


class DeviceDecodeError(RuntimeError):
    """The device's JPEG decoder does not work here; the message says what failed."""


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
    formats, and JPEGs it refuses (CMYK, for one), are decoded on the CPU and copied.
    ``DECODED`` counts the files of each path. A batch whose JPEGs the device decodes none
    of while the CPU can is a broken decoder (nvJPEG failing to start, say), not bad files:
    that raises ``DeviceDecodeError`` rather than training on CPU decodes unawares.
    """
    device = torch.device(device)
    out: list[Tensor | None] = [None] * len(encoded)
    jpegs = [i for i, data in enumerate(encoded) if tuple(data[:2].tolist()) == _JPEG_START]
    decoded, error = _decode_jpegs([encoded[i] for i in jpegs], device)
    for i, image in zip(jpegs, decoded, strict=True):
        out[i] = image
    DECODED["device"] += sum(image is not None for image in decoded)
    for i, image in enumerate(out):
        if image is not None:
            continue
        out[i] = _decode_on_cpu(encoded[i], sources[i]).to(device, non_blocking=True)
        DECODED["cpu"] += 1
        if i in jpegs and not any(image is not None for image in decoded):
            raise DeviceDecodeError(
                f"decode_jpeg on {device} decoded none of a batch's {len(jpegs)} JPEG files, "
                f"which the CPU decodes ({sources[i]}, for one): {error}; set data.decode: cpu "
                "to decode in the loader's workers"
            )
    return out


def _decode_jpegs(files: list[Tensor], device: torch.device) -> tuple[list[Tensor | None], str]:
    """``decode_jpeg`` of ``files`` on ``device``: all in one call, else (one bad file fails
    the call) one by one, None for each file it refuses; and the first error, if any."""
    if not files:
        return [], ""
    if device.type == "cuda":
        # nvJPEG writes its outputs from a stream of its own that does not wait for the
        # caller's: memory the caching allocator hands it may still be in use by the queued
        # kernels of the previous step (pytorch/vision#9606). Drain the caller's stream first.
        torch.cuda.current_stream(device).synchronize()
    try:
        with _quiet():
            return decode_jpeg(files, mode=ImageReadMode.RGB, device=device), ""
    except RuntimeError as err:
        error = str(err)
    images: list[Tensor | None] = []
    for data in files:
        try:
            with _quiet():
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            images.append(None)
    return images, error


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
    ``align_corners=False`` puts pixel i's centre at (2i + 1) / size - 1. The images are
    laid into one zero-padded batch, so one ``grid_sample`` warps them all: the padding is
    the zeros that bilinear sampling reads outside each image anyway. The inverses are
    computed on the host and reach the device from pinned memory without a wait.
    """
    out_w, out_h = (int(v) for v in output_size)
    device = images[0].device
    square = torch.zeros(len(images), 3, 3, dtype=torch.float64)
    square[:, :2] = matrices.to(torch.float64)
    square[:, 2, 2] = 1.0
    to_image = torch.linalg.inv(square)[:, :2].to(torch.float32)
    if device.type == "cuda":
        to_image = to_image.pin_memory()
    to_image = to_image.to(device, non_blocking=True)
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    padded = torch.zeros(len(images), 3, height, width, dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        padded[i, :, : image.shape[1], : image.shape[2]] = image
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=device),
        torch.arange(out_w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    x, y = torch.einsum("hwk,nik->nhwi", pixels, to_image).unbind(-1)
    grid = torch.stack(((2.0 * x + 1.0) / width - 1.0, (2.0 * y + 1.0) / height - 1.0), -1)
    crops = F.grid_sample(
        padded.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return crops.round_().clamp_(0, 255).to(torch.uint8)
