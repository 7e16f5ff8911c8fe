"""Our checkpoint format, its loading, and import of reference (MMPose-layout) checkpoints.

A checkpoint is a plain dict of tensors and JSON-like values, so it always loads
with ``torch.load(weights_only=True)``: no pickled code runs on load.

Reference checkpoints are MMEngine's: besides the weights they pickle MMEngine and NumPy
objects (message hub, dataset meta, scheduler state). ``load_foreign`` reads them with an
unpickler that rebuilds only tensors and plain containers; every other class becomes an
inert ``Skipped`` placeholder that records its name, so nothing in the file runs.
"""

from __future__ import annotations

import collections
import logging
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ihl import config as config_mod
from ihl.config import Config
from ihl.files import torch_save
from ihl.losses import RealNVP
from ihl.models import build_model

log = logging.getLogger(__name__)

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
    model, cfg, _ = load_model_and_epoch(path)
    return model, cfg


def load_model_and_epoch(path: str | Path) -> tuple[torch.nn.Module, Config, int | None]:
    """``load_model``, plus the epoch the checkpoint was saved at when it says, from one read."""
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
    epoch = ckpt.get("epoch")
    return model, cfg, int(epoch) if isinstance(epoch, int | float) else None


def init_from(path: str | Path, model: torch.nn.Module, criterion: torch.nn.Module) -> None:
    """Start a run from one of our checkpoints: the model's weights strictly, and the flow's
    when the checkpoint has them and the loss has a flow."""
    ckpt = safe_load(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an IHL checkpoint (format {ckpt.get('format')!r})")
    try:
        model.load_state_dict(ckpt["model"])
        if "flow" in ckpt and hasattr(criterion, "flow"):
            criterion.flow.load_state_dict(ckpt["flow"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: does not fit this run's model: {err}") from None


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


_REBUILT = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
"""The only callables a foreign checkpoint may name: tensors and ordered dicts. (Storages
are resolved by torch.load itself, from its own table.)"""


class Skipped:
    """Stands in for an object of a class that is not rebuilt; keeps the class name only.

    Whatever the pickle asks of it (construct, set state, append, set items) is ignored.
    """

    name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Skipped:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"Skipped({self.name})"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _REBUILT.get((module, name))
        if found is not None:
            return found
        return type(name, (Skipped,), {"name": f"{module}.{name}", "__module__": __name__})


_RESTRICTED_PICKLE = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
    __name__="ihl.checkpoint.restricted_pickle",
)


def load_foreign(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by another framework without running anything it pickled.

    Tensors, dicts, lists, tuples and scalars come back as they were; an object of any
    other class comes back as a ``Skipped`` placeholder naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(
            path, map_location="cpu", pickle_module=_RESTRICTED_PICKLE, weights_only=False
        )
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


MAX_NESTING = 100
"""How deep containers may nest in a foreign checkpoint; deeper (or self-referencing) is refused."""


def skipped_names(obj: Any, depth: int = 0) -> set[str]:
    """The class names of the ``Skipped`` placeholders anywhere in a loaded checkpoint.

    A checkpoint whose containers nest more than ``MAX_NESTING`` deep, or hold themselves,
    is refused (CheckpointError) rather than walked into a RecursionError.
    """
    if depth > MAX_NESTING:
        raise CheckpointError(
            f"nests containers more than {MAX_NESTING} deep (or a container holds itself): "
            "not a checkpoint"
        )
    if isinstance(obj, Skipped):
        return {obj.name}
    if isinstance(obj, dict):
        obj = obj.values()
    elif not isinstance(obj, list | tuple):
        return set()
    return set().union(*(skipped_names(v, depth + 1) for v in obj), set())


# The reference's flow sits in the loss: head.loss_module.flow_model.* for a single loss,
# head.loss_module.loss_modules.<i>.flow_model.* inside MMPose's MultipleLossWrapper.
_FLOW_KEY = re.compile(r"^head\.loss_module\.(?:loss_modules\.\d+\.)?flow_model\.(.+)$")
_UNUSED_REFERENCE_KEYS = ("head.fc.weight", "head.fc.bias")
"""A Linear the reference head builds and never calls."""


def split_reference_state(
    state: dict[str, Any], heatmap_size: tuple[int, int]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(model weights, flow weights) of a reference state dict, the flow under our names.

    The reference's coordinate grids (head.linspace_x/y) must be ours (j / W, i / H) and are
    then dropped, as are its unused head.fc and its flow prior (which must be the standard
    normal ours assumes). A value that is not a tensor is refused by name.
    """
    bad = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        kinds = ", ".join(f"{k} ({type(state[k]).__name__})" for k in bad[:5])
        raise CheckpointError(f"state_dict holds values that are not tensors: {kinds}")
    w, h = heatmap_size
    grids = {
        "head.linspace_x": (torch.arange(w, dtype=torch.float64) / w).view(1, 1, 1, w),
        "head.linspace_y": (torch.arange(h, dtype=torch.float64) / h).view(1, 1, h, 1),
    }
    model: dict[str, Tensor] = {}
    flow: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _FLOW_KEY.match(key)
        if key in grids:
            if value.shape != grids[key].shape or not torch.allclose(
                value.double(), grids[key], atol=1e-6
            ):
                raise CheckpointError(
                    f"{key}: shape {tuple(value.shape)} is not the grid of a {w}x{h} map"
                )
        elif key in _UNUSED_REFERENCE_KEYS:
            continue
        elif match is None:
            model[key] = value
        elif match.group(1) == "loc" and bool(value.abs().max() == 0):
            continue
        elif match.group(1) == "cov" and torch.equal(value.double(), torch.eye(2).double()):
            continue
        elif match.group(1) in ("loc", "cov"):
            raise CheckpointError(f"{key}: the flow's prior is not the standard normal")
        else:
            flow["masks" if match.group(1) == "mask" else match.group(1)] = value
    return model, flow


def import_checkpoint(
    src: str | Path, dst: str | Path, cfg: Config, drop: tuple[str, ...] = ()
) -> Path:
    """Convert a reference (MMEngine) checkpoint for the model described by ``cfg``.

    The model weights load strictly; the flow's weights, when the checkpoint has them, are
    kept under ``flow`` for fine-tuning (our RealNVP's state dict, checked against it).
    """
    ckpt = load_foreign(src)
    try:
        skipped = skipped_names(ckpt)
    except CheckpointError as err:
        raise CheckpointError(f"{src}: {err}") from None
    if skipped:
        log.info("%s: not rebuilt (training state only): %s", src, ", ".join(sorted(skipped)))
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict):
        raise CheckpointError(f"{src}: 'state_dict' is a {type(state).__name__}, not a dict")
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    cfg = cfg.model_copy(deep=True)
    cfg.model.pretrained = False
    model = build_model(cfg.model)
    try:
        weights, flow_state = split_reference_state(state, cfg.model.heatmap_size)
        converted = convert_reference(weights, model.state_dict(), drop)
    except CheckpointError as err:
        raise CheckpointError(f"{src}: {err}") from None
    model.load_state_dict(converted, strict=False)
    extra: dict[str, Any] = {"source": str(src)}
    if flow_state:
        flow = RealNVP()
        try:
            flow.load_state_dict(flow_state)
        except RuntimeError as err:
            raise CheckpointError(f"{src}: the flow's weights do not fit ours: {err}") from None
        extra["flow"] = flow.state_dict()
    return save_model(dst, model, cfg, **extra)
