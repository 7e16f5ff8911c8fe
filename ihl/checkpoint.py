"""Our checkpoint format, its loading, and import of reference (MMPose-layout) checkpoints.

A checkpoint is a plain dict of tensors and JSON-like values, so it always loads
with ``torch.load(weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ihl import config as config_mod
from ihl.config import Config
from ihl.files import torch_save
from ihl.models import build_model

FORMAT = "ihl-checkpoint/1"

# Reference key prefix -> ours. MMPose names the ResNet/HRNet backbone like
# torchvision and the HRNet project (as we do); its SimpleBaseline-style head
# keeps deconv_layers and final_layer under simplebaseline_head, while the HRNet
# head's 1x1 convolution sits at head.final_layer.
REFERENCE_PREFIXES = (
    ("backbone.", "backbone."),
    ("head.simplebaseline_head.deconv_layers.", "head.deconv_layers."),
    ("head.simplebaseline_head.final_layer.", "head.final_layer."),
    ("head.final_layer.", "head.final_layer."),
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def safe_load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be loaded with weights_only=True (it is not a tensor checkpoint or "
            f"it pickles Python objects, which are refused): {err}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def save_model(path: str | Path, model: torch.nn.Module, cfg: Config, **extra: Any) -> Path:
    return torch_save(
        {"format": FORMAT, "config": config_mod.to_dict(cfg), "model": model.state_dict(), **extra},
        path,
    )


def load_model(path: str | Path) -> tuple[torch.nn.Module, Config]:
    """Rebuild a model from one of our checkpoints (config included), weights loaded strictly."""
    ckpt = safe_load(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an IHL checkpoint (format {ckpt.get('format')!r}); "
            "convert reference checkpoints with `ihl import-checkpoint`"
        )
    cfg = config_mod.from_dict(ckpt["config"], source=str(path))
    cfg.model.pretrained = False
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model, cfg


def convert_reference(
    state: dict[str, Tensor], expected: dict[str, Tensor], drop: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """Rename reference keys to ours and check them against the model's own state dict.

    Keys starting with a prefix in ``drop`` are discarded on purpose (e.g. a
    training-only flow). Anything unknown, missing or of the wrong shape is refused.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(drop) or key.endswith("num_batches_tracked") and key not in expected:
            continue
        new = next(
            (ours + key[len(ref) :] for ref, ours in REFERENCE_PREFIXES if key.startswith(ref)),
            None,
        )
        if new is None or new not in expected:
            unknown.append(key)
        else:
            out[new] = value
    missing = [k for k in expected if k not in out and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(out[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in out and out[k].shape != v.shape
    ]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown keys: {', '.join(unknown[:8])}")
    if missing:
        problems.append(f"{len(missing)} missing keys: {', '.join(missing[:8])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {'; '.join(shapes[:5])}")
    if problems:
        raise CheckpointError(
            "reference checkpoint does not match the model config: " + " | ".join(problems)
        )
    return out


def import_checkpoint(
    src: str | Path, dst: str | Path, cfg: Config, drop: tuple[str, ...] = ()
) -> Path:
    """Convert a reference checkpoint for the model described by ``cfg`` into our format."""
    ckpt = safe_load(src)
    state = ckpt.get("state_dict", ckpt)
    cfg = cfg.model_copy(deep=True)
    cfg.model.pretrained = False
    model = build_model(cfg.model)
    try:
        converted = convert_reference(state, model.state_dict(), drop)
    except CheckpointError as err:
        raise CheckpointError(f"{src}: {err}") from None
    model.load_state_dict(converted, strict=False)
    return save_model(dst, model, cfg, source=str(src))
