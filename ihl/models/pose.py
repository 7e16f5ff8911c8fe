"""A top-down pose model: normalise pixels, extract features, run a head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ihl.config import ModelConfig
from ihl.models.backbones import build_backbone, load_imagenet
from ihl.models.heads import HEADS
from ihl.weights import download, imagenet_source

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PoseModel(nn.Module):
    """Takes RGB crops in 0..255 (uint8 or float, B x 3 x H x W) and returns the head's outputs.

    Normalising inside the model lets data loaders ship uint8 tensors (4x fewer
    bytes) and lets serving feed decoded images without repeating the constants.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, cfg.resnet_stages)
        kwargs = dict(
            num_joints=cfg.num_joints,
            deconv_layers=cfg.deconv_layers,
            deconv_channels=cfg.deconv_channels,
        )
        if cfg.head != "heatmap":
            kwargs |= dict(beta=cfg.beta, debias=cfg.debias, debias_form=cfg.debias_form)
        self.head = HEADS[cfg.head](self.backbone.out_channels, **kwargs)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        return self.head(self.backbone(x))


def build_model(cfg: ModelConfig) -> PoseModel:
    model = PoseModel(cfg)
    if cfg.pretrained:
        source = imagenet_source(cfg.backbone) if cfg.pretrained is True else cfg.pretrained
        load_imagenet(model.backbone, download(model.backbone) if source is True else source)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
