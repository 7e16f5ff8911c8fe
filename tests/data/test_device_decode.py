"""``data.decode: device``: workers ship encoded files, the training process decodes and warps.

Run on CPU tensors here; on CUDA the same code decodes with nvJPEG. Each test compares the
device path against the CPU path (OpenCV decode and warpAffine) it replaces.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from op_calls import OpCalls
from PIL import Image
from sample_data import COCO_ANN, COCO_IMAGES, MPII_SAMPLE

from ihl import config
from ihl.data import device_decode
from ihl.data.coco import CocoKeypoints
from ihl.data.device_decode import (
    AFFINE,
    DECODED,
    ENCODED,
    LENGTHS,
    DeviceDecodeError,
    batch_images,
    collate,
    decode_batch,
    encoded_sample,
    warp_batch,
)
from ihl.data.errors import DatasetError
from ihl.data.keypoints import COCO
from ihl.data.mpii import MpiiKeypoints
from ihl.data.synth import make_coco_synth
from ihl.data.transforms import TopDownAugment, TopDownPipeline
from ihl.train import train

INPUT = (192, 256)  # (width, height)
CPU = torch.device("cpu")
AUGMENTS = {
    "plain": dict(flip_prob=0.0, rotation_prob=0.0),
    "flipped": dict(flip_prob=1.0, rotation_prob=0.0),
    "rotated": dict(flip_prob=0.0, rotation_prob=1.0),
    "all": {},
}


def augment(**overrides) -> TopDownAugment:
    params = dict(half_body_prob=0.0, shift_prob=0.0, scale_range=(1.0, 1.0)) | overrides
    return TopDownAugment(COCO, INPUT, **params)


def both_paths(dataset_cpu, dataset_device, indices) -> tuple[dict, dict, torch.Tensor]:
    """(CPU batch, device batch, the device batch's crops decoded and warped on the CPU)."""
    cpu = collate([dataset_cpu[i] for i in indices])
    device = collate([dataset_device[i] for i in indices])
    return cpu, device, batch_images(device, INPUT, CPU)


def pixel_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per crop, in grey levels."""
    return (a.int() - b.int()).abs().float().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_real_jpeg_crops_and_targets_match_the_cpu_path(name):
    kwargs = dict(
        train=True, input_size=INPUT, heatmap_size=(48, 64), augment=augment(**AUGMENTS[name])
    )
    on_cpu = CocoKeypoints(COCO_ANN, COCO_IMAGES, **kwargs)
    on_device = CocoKeypoints(COCO_ANN, COCO_IMAGES, decode="device", **kwargs)
    indices = range(len(on_cpu))
    cpu, device, crops = both_paths(on_cpu, on_device, indices)

    assert "image" not in device and len(device[LENGTHS]) == len(on_cpu)
    sizes = [on_cpu.image_path(i).stat().st_size for i in indices]
    assert device[LENGTHS].tolist() == sizes and len(device[ENCODED]) == sum(sizes)
    assert crops.dtype == torch.uint8 and crops.shape == cpu["image"].shape
    assert pixel_difference(crops, cpu["image"]).max() < 0.5
    assert (crops.int() - cpu["image"].int()).abs().max() <= 2
    for key in ("coords", "weights", "heatmap_x", "heatmap_y", "center", "scale", "rotation"):
        assert torch.equal(cpu[key], device[key]), key
    if name == "flipped":
        assert device["flipped"].all()
    if name == "rotated":
        assert (device["rotation"] != 0).all()


def test_the_crops_are_not_the_same_whatever_the_matrix():
    """The comparison above could pass on blank crops; a wrong matrix must show."""
    kwargs = dict(train=True, input_size=INPUT, augment=augment(flip_prob=0.0, rotation_prob=0.0))
    on_cpu = CocoKeypoints(COCO_ANN, COCO_IMAGES, **kwargs)
    on_device = CocoKeypoints(COCO_ANN, COCO_IMAGES, decode="device", **kwargs)
    cpu, device, _ = both_paths(on_cpu, on_device, range(4))
    device[AFFINE][:, 0, 2] += 3.0  # three pixels off
    shifted = batch_images(device, INPUT, CPU)
    assert pixel_difference(shifted, cpu["image"]).min() > 2.0


def synthetic_image(height: int = 300, width: int = 400) -> np.ndarray:
    """A BGR image with gradients, edges and colours that no flip or turn maps onto itself."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack(
        [(xs * 255 // width), (ys * 255 // height), ((xs // 37 + ys // 23) % 2) * 200], axis=-1
    ).astype(np.uint8)
    cv2.rectangle(image, (30, 40), (120, 90), (255, 255, 255), -1)
    return image


def encode(image_bgr: np.ndarray, ext: str, orientation: int = 1) -> np.ndarray:
    """File bytes of an image; with an EXIF orientation tag when ``orientation`` is not 1."""
    if orientation == 1:
        ok, buf = cv2.imencode(ext, image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        return buf.ravel()
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(image_bgr[:, :, ::-1]).save(
        out, "JPEG" if ext == ".jpg" else "PNG", exif=exif.tobytes(), quality=95
    )
    return np.frombuffer(out.getvalue(), dtype=np.uint8).copy()


def device_crop(pipeline, data, person, rng_seed) -> tuple[torch.Tensor, torch.Tensor]:
    """(CPU-path crop, device-path crop) of one person in the encoded file ``data``."""
    cpu = pipeline(
        cv2.imdecode(data, cv2.IMREAD_COLOR), *person, rng=np.random.default_rng(rng_seed)
    )
    sample, matrix = pipeline.geometry(*person, rng=np.random.default_rng(rng_seed))
    device = collate([encoded_sample(data, sample, matrix, "synthetic")])
    return cpu["image"][None], batch_images(device, INPUT, CPU)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_synthetic_image_partly_outside_the_crop(ext, name):
    """The box reaches past the image's corner, so the black border is compared too."""
    pipeline = TopDownPipeline(COCO, INPUT, augment=augment(**AUGMENTS[name]))
    data = encode(synthetic_image(), ext)
    joints = np.random.default_rng(0).uniform(0, 300, (17, 2))
    person = (np.array([360.0, 40.0]), np.array([240.0, 320.0]), joints, np.ones(17))
    for seed in range(3):
        cpu, device = device_crop(pipeline, data, person, seed)
        assert (cpu == 0).float().mean() > 0.2  # a good part of the crop is border
        assert pixel_difference(device, cpu).item() < 0.5


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_opencv_applies_it(ext, orientation):
    pipeline = TopDownPipeline(COCO, INPUT, augment=augment(rotation_prob=0.5, flip_prob=0.5))
    image = synthetic_image(240, 320)
    data = encode(image, ext, orientation)
    upright = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if orientation >= 5:
        assert upright.shape[:2] == (320, 240)  # OpenCV turned it
    person = (np.array([120.0, 160.0]), np.array([180.0, 240.0]), np.zeros((17, 2)), np.ones(17))
    cpu, device = device_crop(pipeline, data, person, orientation)
    assert pixel_difference(device, cpu).item() < 1.0


def test_mpii_trains_on_device_decoded_crops_too():
    kwargs = dict(train=True, input_size=(256, 256))
    images = MPII_SAMPLE / "images"
    ann = MPII_SAMPLE / "annotations" / "mpii_sample.json"
    on_cpu = MpiiKeypoints(ann, images, **kwargs)
    on_device = MpiiKeypoints(ann, images, decode="device", **kwargs)
    cpu = collate([on_cpu[i] for i in range(3)])
    device = collate([on_device[i] for i in range(3)])
    crops = batch_images(device, (256, 256), CPU)
    assert pixel_difference(crops, cpu["image"]).max() < 0.5
    assert torch.equal(cpu["coords"], device["coords"])


def test_a_file_that_does_not_decode_is_named(tmp_path):
    good = torch.from_numpy(encode(synthetic_image(), ".jpg"))
    broken = torch.from_numpy(np.concatenate([good.numpy()[:200], [0xFF, 0xD9]]).astype(np.uint8))
    not_an_image = torch.frombuffer(bytearray(b"hello, world"), dtype=torch.uint8)
    images = decode_batch([good, good], CPU, ["a", "b"])
    assert [tuple(i.shape) for i in images] == [(3, 300, 400)] * 2
    for bad in (broken, not_an_image):
        with pytest.raises(DatasetError, match="bad.jpg \\(annotation id 7\\): cannot decode"):
            decode_batch([good, bad], CPU, ["a", "bad.jpg (annotation id 7)"])


def test_a_broken_device_decoder_fails_instead_of_decoding_on_the_cpu(monkeypatch):
    """nvJPEG failing to start raises the same RuntimeError as a bad file; the CPU then
    decodes every file, and a "device" run would be a CPU run without anyone knowing."""

    def broken(*args, **kwargs):
        raise RuntimeError("nvjpegCreateSimple failed: NVJPEG_STATUS_NOT_INITIALIZED")

    good = torch.from_numpy(encode(synthetic_image(), ".jpg"))
    monkeypatch.setattr(device_decode, "decode_jpeg", broken)
    with pytest.raises(DeviceDecodeError, match="none of a batch's 2 JPEG.*NOT_INITIALIZED"):
        decode_batch([good, good], CPU, ["a", "b"])


def test_the_files_of_each_decoder_are_counted():
    jpeg = torch.from_numpy(encode(synthetic_image(), ".jpg"))
    png = torch.from_numpy(encode(synthetic_image(), ".png"))
    before = DECODED.copy()
    decode_batch([jpeg, png, jpeg], CPU, ["a", "b", "c"])
    assert DECODED["device"] - before["device"] == 2 and DECODED["cpu"] - before["cpu"] == 1


def warp_one_by_one(images: list[torch.Tensor], matrices: torch.Tensor) -> torch.Tensor:
    """The warp as it was, one ``grid_sample`` per image: each its own size's grid."""
    w, h = INPUT
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1).double()
    crops = []
    for image, matrix in zip(images, matrices, strict=True):
        square = torch.eye(3, dtype=torch.float64)
        square[:2] = matrix
        x, y = (pixels @ torch.linalg.inv(square)[:2].T).float().unbind(-1)
        _, height, width = image.shape
        grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), -1)
        crop = F.grid_sample(image[None].float(), grid[None], align_corners=False)
        crops.append(crop[0].round().clamp(0, 255).to(torch.uint8))
    return torch.stack(crops)


def test_one_grid_sample_warps_a_batch_of_mixed_sizes_as_one_per_image_would():
    """Images of three sizes in one batch: padding them to the largest changes no pixel."""
    generator = torch.Generator().manual_seed(0)
    sizes = [(300, 400), (480, 360), (240, 320), (300, 400)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
              for h, w in sizes]  # fmt: skip
    angles = torch.tensor([0.0, 0.4, -1.2, 2.5])
    scale = torch.tensor([0.6, 0.9, 1.3, 0.5])
    cos, sin = torch.cos(angles) * scale, torch.sin(angles) * scale
    shift = torch.tensor([[-20.0, 10.0], [-100.0, -50.0], [40.0, 5.0], [60.0, -120.0]])
    matrices = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
    matrices = torch.cat([matrices, shift[..., None]], -1).double()
    calls = OpCalls(frozenset({torch.ops.aten.grid_sampler_2d.default}))
    with calls:
        crops = warp_batch(images, matrices, INPUT)
    assert len(calls.calls) == 1
    expected = warp_one_by_one(images, matrices)
    assert (crops == 0).float().mean() > 0.05  # the border outside the images is compared
    assert (crops.int() - expected.int()).abs().max() <= 1
    assert (crops != expected).float().mean() < 1e-3


def test_unknown_decode_setting_is_refused():
    with pytest.raises(ValueError, match="'gpu'"):
        CocoKeypoints(COCO_ANN, COCO_IMAGES, decode="gpu")
    with pytest.raises(config.ConfigError, match="data.decode"):
        config.load("sample", {"data.decode": "gpu"})


class Losses:
    """An EpochLog that keeps the training loss of each epoch."""

    def __init__(self) -> None:
        self.loss: list[float] = []

    def start(self, params, resumed, epoch) -> None:
        pass

    def log_epoch(self, epoch, metrics) -> None:
        self.loss.append(metrics["train/loss"])

    def end(self) -> None:
        pass


def test_training_with_decode_on_the_device_matches_the_cpu_path(tmp_path):
    """A loader worker ships the encoded files through the collate; the losses of the first
    epoch agree with decoding in the workers up to the crops' interpolation rounding."""
    data = tmp_path / "coco"
    make_coco_synth(data, num_train=6, num_val=1, seed=5)
    losses = {}
    for decode in ("cpu", "device"):
        cfg = config.load(
            "sample",
            {
                "model.backbone": "resnet18",
                "model.input_size": [64, 64],
                "model.deconv_channels": 32,
                "train.epochs": 1,
                "train.batch_size": 4,
                "train.num_workers": 1 if decode == "device" else 0,
                "train.warmup_iters": 2,
                "data.root": str(data),
                "data.decode": decode,
            },
        )
        log = Losses()
        train(cfg, tmp_path / decode, device="cpu", progress=False, epoch_log=log)
        losses[decode] = log.loss[0]
    assert np.isfinite(losses["device"])
    # measured relative gaps over synthetic seeds 5, 6, 7: 1.4e-3, 2.2e-4, 2e-5 (7e-4, 5.6e-4,
    # 3e-5 with the box shift of before the MMPose order): the crops' rounding, not a bias
    assert losses["device"] == pytest.approx(losses["cpu"], rel=3e-3)
