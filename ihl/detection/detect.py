"""Person boxes for whole images: the detector's raw output filtered by the config."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import nms

from ihl.config import DetectorConfig
from ihl.detection.models import PERSON
from ihl.inference import model_device

Detections = tuple[np.ndarray, np.ndarray]
"""(N, 4) person boxes x, y, w, h in image pixels and their (N,) scores in [0, 1], best first."""


def to_tensor(image_rgb: np.ndarray) -> Tensor:
    """An H x W x 3 uint8 RGB image as the 3 x H x W float tensor in [0, 1] detectors take."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"detector input must be an H x W x 3 uint8 RGB image, got {image_rgb.dtype} "
            f"of shape {image_rgb.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div_(255)


def select_persons(
    boxes: Tensor, scores: Tensor, labels: Tensor, size: tuple[int, int], cfg: DetectorConfig
) -> Detections:
    """Person boxes (x0, y0, x1, y1) -> the config's persons: score threshold, NMS, at most
    ``max_persons``, clipped to the (width, height) image, as x, y, w, h."""
    keep = (labels == PERSON) & (scores >= cfg.score_threshold)
    boxes, scores = boxes[keep].float(), scores[keep].float()
    keep = nms(boxes, scores, cfg.nms_iou)[: cfg.max_persons]
    boxes, scores = boxes[keep], scores[keep].clamp(0, 1)
    width, height = size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    boxes[:, 2:] -= boxes[:, :2]
    sizable = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return boxes[sizable].numpy().astype(np.float64), scores[sizable].numpy().astype(np.float64)


@torch.no_grad()
def detect(model: nn.Module, images_rgb: list[np.ndarray], cfg: DetectorConfig) -> list[Detections]:
    """Persons in each H x W x 3 uint8 RGB image, one batched forward on the model's device."""
    if not images_rgb:
        return []
    device = model_device(model)
    outputs = model([to_tensor(image).to(device) for image in images_rgb])
    return [
        select_persons(
            out["boxes"].cpu(),
            out["scores"].cpu(),
            out["labels"].cpu(),
            (image.shape[1], image.shape[0]),
            cfg,
        )
        for out, image in zip(outputs, images_rgb, strict=True)
    ]
