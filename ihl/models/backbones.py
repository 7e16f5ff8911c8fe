"""ResNet (torchvision) and pose HRNet (timm's blocks) feature extractors.

Both keep the parameter names of their usual checkpoints (torchvision's ResNet,
the HRNet project's ImageNet files), which are also MMPose's backbone names, so
ImageNet initialisation and reference checkpoints load by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from timm.models import hrnet as timm_hrnet
from torch import Tensor, nn

log = logging.getLogger(__name__)

RESNET_CHANNELS = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its pooling and classifier.

    All four stages give stride-32 features; ``stages=3`` stops after layer3
    (stride 16, half the channels), ``stages=2`` after layer2 (stride 8).
    """

    def __init__(self, depth: int, stages: int = 4):
        super().__init__()
        net = torchvision.models.get_model(f"resnet{depth}", weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool"):
            setattr(self, name, getattr(net, name))
        self.layers = [f"layer{i}" for i in range(1, stages + 1)]
        for name in self.layers:
            setattr(self, name, getattr(net, name))
        self.out_channels = RESNET_CHANNELS[depth] // 2 ** (4 - stages)
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layers:
            x = getattr(self, name)(x)
        return x

    def imagenet_state_dict(self) -> dict[str, Tensor]:
        weights = torchvision.models.get_model_weights(f"resnet{self.depth}").IMAGENET1K_V1
        return weights.get_state_dict(progress=True)


class PoseHRNet(timm_hrnet.HighResolutionNet):
    """HRNet as used for pose: the last stage-4 module fuses into the stride-4 branch only.

    timm builds the classification HRNet, whose every stage-4 module keeps all four
    branches; swapping its last module for a single-output one gives the pose
    network with timm's own blocks and the HRNet checkpoint's parameter names.
    """

    def __init__(self, width: int):
        cfg = timm_hrnet.cfg_cls[f"hrnet_w{width}"]
        super().__init__(cfg, head="")
        stage = cfg["stage4"]
        self.stage4[-1] = timm_hrnet.HighResolutionModule(
            stage["num_branches"],
            timm_hrnet.block_types_dict[stage["block_type"]],
            stage["num_blocks"],
            list(self.stage4[-2].get_num_in_chs()),
            stage["num_channels"],
            stage["fuse_method"],
            multi_scale_output=False,
        )
        self.init_weights()
        self.out_channels = width
        self.width = width

    def init_weights(self) -> None:
        """MMPose's HRNet init, which the reference trains from when it has no ImageNet weights
        (CrowdPose): convolutions N(0, 0.001), batch norms weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]

    def imagenet_state_dict(self) -> dict[str, Tensor]:
        import timm

        return timm.create_model(f"hrnet_w{self.width}", pretrained=True).state_dict()


def build_backbone(name: str, resnet_stages: int = 4) -> nn.Module:
    if name.startswith("resnet"):
        return ResNetBackbone(int(name[len("resnet") :]), resnet_stages)
    if name.startswith("hrnet_w"):
        return PoseHRNet(int(name[len("hrnet_w") :]))
    raise ValueError(f"unknown backbone {name!r}")


def load_imagenet(backbone: nn.Module, source: str | Path | dict[str, Tensor]) -> list[str]:
    """Initialise a backbone from ImageNet weights: a file, or the state dict a download gave
    (``ihl.weights`` downloads them, or stages them in a folder for clusters without internet).

    Classifier keys (fc, incre_modules, classifier, the extra stage-4 fusions) are
    ignored; a missing backbone key is an error. Returns the ignored keys.
    """
    if isinstance(source, dict):
        state, source = source, "(download)"
    else:
        state = torch.load(Path(source), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"ImageNet checkpoint {source} lacks {len(missing)} backbone keys, "
            f"e.g. {', '.join(missing[:5])}"
        )
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(
            f"ImageNet checkpoint {source} has wrong shapes for {', '.join(wrong[:5])}"
        )
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    ignored = sorted(k for k in state if k not in own)
    log.info("loaded ImageNet weights from %s (%d classifier keys ignored)", source, len(ignored))
    return ignored
