"""Person detectors built from torchvision's detection models.

Two kinds: torchvision's own COCO architectures, whose COCO-trained weights come from
torchvision's weights API (person is COCO label 1), and small variants of three of
them (a ResNet-18 up to layer3 under a 64-channel FPN) that train from scratch on the
synthetic set in a couple of CPU minutes. Both label a person 1.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models import get_model_weights, resnet18
from torchvision.models.detection import (
    FCOS,
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_320_fpn,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn_v2,
    fcos_resnet50_fpn,
    retinanet_resnet50_fpn_v2,
    ssdlite320_mobilenet_v3_large,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ihl.checkpoint import CheckpointError, safe_load
from ihl.config import DetectorConfig
from ihl.files import torch_save

PERSON = 1
"""The person label, in COCO's 91 categories and in the two of the small detectors."""
COCO_CLASSES = 91
RAW_SCORE = 0.05
"""The models keep boxes down to this score; ``detect`` applies the config's own threshold."""
FORMAT = "ihl-detector-1"
"""Marks a detector file written by ``save_detector``."""

TORCHVISION = {
    "fasterrcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,
    "fasterrcnn_mobilenet_v3_large_fpn": fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenet_v3_large_320_fpn": fasterrcnn_mobilenet_v3_large_320_fpn,
    "retinanet_resnet50_fpn_v2": retinanet_resnet50_fpn_v2,
    "fcos_resnet50_fpn": fcos_resnet50_fpn,
    "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large,
}


class DetectorError(ValueError):
    """A detector config or file that cannot give a working detector."""


def _small_backbone(channels: int = 64) -> BackboneWithFPN:
    """ResNet-18 up to layer3 (strides 8 and 16) with P6/P7 above: four levels, 8 to 64 px."""
    body = resnet18(weights=None)
    return BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1"},
        in_channels_list=[128, 256],
        out_channels=channels,
        extra_blocks=LastLevelP6P7(channels, channels),
    )


def _small_anchors(ratios: tuple[float, ...]) -> AnchorGenerator:
    sizes = ((16, 24), (32, 48), (64, 96), (128, 192))
    return AnchorGenerator(sizes, (ratios,) * len(sizes))


def _small(architecture: str, cfg: DetectorConfig) -> nn.Module:
    backbone = _small_backbone()
    common = {"min_size": cfg.min_size, "max_size": cfg.max_size}
    if architecture == "fcos_small":
        anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((1.0,),) * 4)
        return FCOS(backbone, 2, anchor_generator=anchors, score_thresh=RAW_SCORE, **common)
    if architecture == "retinanet_small":
        anchors = _small_anchors((2.0, 3.0))
        head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], 2)
        return RetinaNet(backbone, 2, anchor_generator=anchors, head=head, **common)
    anchors = _small_anchors((2.0, 3.0))
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, 256)
    return FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(256, 2),
        **common,
    )


def _torchvision_weights(architecture: str, name: str):
    """The weights enum member of ``architecture`` named ``name`` (``DEFAULT``, ``COCO_V1`` or
    ``ClassName.MEMBER``), from torchvision's weights API."""
    enum = get_model_weights(TORCHVISION[architecture])
    cls_name, _, member = name.rpartition(".")
    if cls_name and cls_name != enum.__name__:
        raise DetectorError(f"detector.weights: {name!r} are not weights of {architecture}")
    try:
        return getattr(enum, member) if member == "DEFAULT" else enum[member]
    except KeyError:
        names = ", ".join(["DEFAULT", *enum.__members__])
        raise DetectorError(
            f"detector.weights: {name!r} is not a weights name of {architecture} ({names})"
        ) from None


def _build(cfg: DetectorConfig, num_classes: int, weights=None) -> nn.Module:
    if cfg.architecture not in TORCHVISION:
        return _small(cfg.architecture, cfg)
    if cfg.architecture.startswith("ssd"):
        options = {"score_thresh": RAW_SCORE}  # SSDlite works on 320 x 320 whatever the image
    else:
        key = "box_score_thresh" if cfg.architecture.startswith("faster") else "score_thresh"
        options = {key: RAW_SCORE, "min_size": cfg.min_size, "max_size": cfg.max_size}
    builder = TORCHVISION[cfg.architecture]
    return builder(weights=weights, weights_backbone=None, num_classes=num_classes, **options)


def build_detector(cfg: DetectorConfig) -> nn.Module:
    """The detector ``cfg`` describes, in eval mode: random, from a detector file, or with
    torchvision's COCO weights (downloaded once into torch's cache)."""
    if cfg.weights is None:
        model = _build(cfg, 2)
    elif Path(cfg.weights).suffix in (".pt", ".pth") or Path(cfg.weights).is_file():
        model, saved = load_detector(cfg.weights)
        if saved.architecture != cfg.architecture:
            raise DetectorError(
                f"detector.weights: {cfg.weights} holds a {saved.architecture}, "
                f"not the configured {cfg.architecture}"
            )
    elif cfg.architecture not in TORCHVISION:
        raise DetectorError(
            f"detector.weights: {cfg.architecture} has no torchvision weights; give a detector "
            "file or null (random initialisation)"
        )
    else:
        model = _build(cfg, COCO_CLASSES, _torchvision_weights(cfg.architecture, cfg.weights))
    return model.eval()


def num_classes(model: nn.Module) -> int:
    """2 for a person-only detector, 91 for COCO weights: what a detector file records."""
    head = getattr(model, "roi_heads", None)
    if head is not None:
        return head.box_predictor.cls_score.out_features
    return model.head.classification_head.num_classes


def save_detector(path: str | Path, model: nn.Module, cfg: DetectorConfig, **extra) -> Path:
    """A self-describing detector file: its config, class count and weights."""
    state = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "num_classes": num_classes(model),
        "model": model.state_dict(),
        **extra,
    }
    return torch_save(state, path)


def load_detector(path: str | Path) -> tuple[nn.Module, DetectorConfig]:
    """The detector saved in ``path`` (eval mode) and the config it was saved with."""
    try:
        ckpt = safe_load(path)
    except CheckpointError as err:
        raise DetectorError(str(err)) from None
    if ckpt.get("format") != FORMAT:
        raise DetectorError(f"{path}: not a detector file (format {ckpt.get('format')!r})")
    try:
        cfg = DetectorConfig.model_validate({**ckpt["config"], "weights": None})
    except ValueError as err:
        raise DetectorError(f"{path}: its detector config does not validate: {err}") from None
    model = _build(cfg, int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg


def detector_for(cfg: DetectorConfig, path: str | Path | None = None):
    """The detector in file ``path`` with the config it was saved with, or else the one
    ``cfg`` describes: what prediction, evaluation and serving run."""
    if path is not None:
        return load_detector(path)
    return build_detector(cfg), cfg
