"""ImageNet weights staged once in a folder, so that training needs no internet.

Downloading at start-up puts every rank of every attempt on the network (into
the container's home, which is gone on restart) and fails outright on clusters
without egress. ``fetch`` downloads a backbone's ImageNet weights once into a
folder on the data volume; with ``IHL_WEIGHTS_DIR`` set to that folder, every
``model.pretrained: true`` config (the paper presets) loads the staged file and
never touches the network. The Kubeflow pipeline and the PyTorchJob set it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ihl.files import torch_save

WEIGHTS_ENV = "IHL_WEIGHTS_DIR"


class WeightsError(ValueError):
    """Staged weights are missing or unusable; the message says how to stage them."""


def weights_file(directory: str | Path, backbone: str) -> Path:
    """Where ``fetch`` stages ``backbone``'s ImageNet weights in ``directory``."""
    return Path(directory) / f"{backbone}-imagenet.pt"


def imagenet_source(backbone: str) -> bool | Path:
    """What ``model.pretrained: true`` loads: the staged file when ``IHL_WEIGHTS_DIR`` is set
    (it must be there: no silent download), else True (download, as torchvision/timm do)."""
    directory = os.environ.get(WEIGHTS_ENV)
    if not directory:
        return True
    path = weights_file(directory, backbone)
    if not path.is_file():
        raise WeightsError(
            f"{path}: no staged ImageNet weights for {backbone} ({WEIGHTS_ENV}={directory}); "
            f"stage them where the internet is reachable with `ihl weights fetch {backbone} "
            f"{directory}`, or unset {WEIGHTS_ENV} to download at start"
        )
    return path


def download(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The published ImageNet state dict of a backbone (torchvision's or timm's download)."""
    try:
        return backbone.imagenet_state_dict()
    except (OSError, RuntimeError, ValueError) as err:  # no egress: URLError, hub errors
        raise WeightsError(
            f"cannot download ImageNet weights for {type(backbone).__name__} ({err}); without "
            f"internet, stage them with `ihl weights fetch NAME DIR` where it is reachable and "
            f"set {WEIGHTS_ENV}=DIR"
        ) from err


def fetch(backbone: str, directory: str | Path) -> Path:
    """Download ``backbone``'s ImageNet weights and write them to ``directory`` atomically.

    The file holds the published state dict unchanged (classifier keys included), so
    it is the same source a download would give. An existing file is kept.
    """
    from ihl.models.backbones import build_backbone

    path = weights_file(directory, backbone)
    if path.is_file():
        return path
    state = download(build_backbone(backbone))
    torch_save({k: v.detach().clone() for k, v in state.items()}, path)
    torch.load(path, map_location="cpu", weights_only=True)  # readable before anyone relies on it
    return path
