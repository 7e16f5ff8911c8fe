"""From crops to keypoints: the flip test, coordinate decoding and keypoint scores, under the
chosen inference precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ihl.config import TestConfig
from ihl.models.heads import argmax_refined
from ihl.models.pose import PoseModel


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are; the CPU for one without any (ONNX Runtime's)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass
class CropPrediction:
    coords: Tensor
    """(B, K, 2) normalised to the crop: multiply by the input (width, height) for crop pixels."""
    scores: Tensor
    """(B, K) keypoint scores in [0, 1]."""
    sigma: Tensor | None
    """(B, K, 2) per-axis scale (IHL only), normalised like coords."""


def to_crop_pixels(coords: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Normalised (x, y) to crop pixels; input_size is (width, height)."""
    return coords * coords.new_tensor(input_size)


def unflip_coords(coords: Tensor, flip_index: list[int], input_width: int, shift: bool) -> Tensor:
    """Mirror coordinates predicted on a flipped crop back and swap left/right joints.

    x -> 1 - x, then one input pixel to the left when ``shift`` (the reference's
    convention, which makes the mirror exact on the pixel grid x = u / width).
    """
    x = 1.0 - coords[..., 0] - (1.0 / input_width if shift else 0.0)
    return torch.stack((x, coords[..., 1]), -1)[:, flip_index]


def unflip_maps(maps: Tensor, flip_index: list[int], shift: bool) -> Tensor:
    """Heatmaps of a flipped crop mirrored back, joints swapped, shifted one map pixel right
    when ``shift`` (as SimpleBaseline does)."""
    back = maps.flip(-1)[:, flip_index]
    if shift:
        back = torch.cat((back[..., :1], back[..., :-1]), -1)
    return back


def sigma_scores(sigma: Tensor, tolerance: float) -> Tensor:
    """Probability, under a Laplace error of scale sigma per axis, that the joint lies within
    ``tolerance`` (fraction of the crop) of the prediction on both axes.

    The loss fits sigma to the size of the actual error, so a small sigma marks a
    confident, usually accurate joint: the score falls as sigma grows.
    """
    return (-torch.expm1(-tolerance / sigma.clamp_min(1e-9))).prod(-1)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Inference precisions: the autocast dtype of the model forward (None: plain float32)."""


class PrecisionError(ValueError):
    """A precision that cannot run here; the message names the option and what would work."""


def check_precision(precision: str, device: torch.device | str, runtime: str = "torch") -> None:
    """Refuse, before any work, a ``precision`` that ``device`` or ``runtime`` cannot run.

    fp16 needs CUDA: CPU autocast to float16 has no fast kernels, and running it anyway
    (or quietly running fp32 instead) would misreport what was measured. ONNX Runtime runs
    the exported float32 graph only.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if runtime != "torch":
        raise PrecisionError(
            f"precision {precision!r} with runtime {runtime!r}: the ONNX Runtime path runs "
            "fp32 only; use --precision fp32, or --runtime torch for reduced precision"
        )
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise PrecisionError(
            f"precision 'fp16' needs a CUDA device, not {torch.device(device).type}; on the CPU "
            "use --precision bf16 (or fp32)"
        )


OUTPUTS = {"ihl": ("coords", "sigma"), "integral": ("coords", "sigma"), "heatmap": ("maps",)}
"""The head outputs inference reads, per head: what an exported model has to return."""


@torch.no_grad()
def predict_crops(
    model: PoseModel,
    images: Tensor,
    test: TestConfig,
    flip_index: list[int],
    precision: str = "fp32",
) -> CropPrediction:
    """Keypoints for a batch of crops, with the flip test when ``test.flip``.

    The flipped crops go through the model in the same forward as the crops (one batch of
    twice the size), which uses the cores better than two forwards of half the size.
    ``model`` is a PoseModel or anything with its ``cfg`` that maps crops to the
    ``OUTPUTS`` of its head (``ihl.runtime.OnnxPoseModel``, fp32 only). With ``precision``
    bf16 or fp16 the forward runs under autocast to that type; the heads compute their
    marginals and moments in float32 even then, and the flip averaging and decoding below
    take float32 outputs, so only the network's convolutions are reduced.
    """
    runtime = "torch" if any(True for _ in model.parameters()) else "onnx"
    check_precision(precision, images.device, runtime)
    head = model.cfg.head
    width = model.cfg.input_size[0]
    batch = len(images)
    dtype = PRECISIONS[precision]
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        both = model(torch.cat((images, images.flip(-1))) if test.flip else images)
    both = {key: both[key].float() for key in OUTPUTS[head]}
    out = {key: both[key][:batch] for key in OUTPUTS[head]}
    if test.flip:
        out_f = {key: both[key][batch:] for key in OUTPUTS[head]}
        if head == "heatmap":
            out["maps"] = (
                out["maps"] + unflip_maps(out_f["maps"], flip_index, test.flip_shift)
            ) / 2
        else:
            back = unflip_coords(out_f["coords"], flip_index, width, test.flip_shift)
            out["coords"] = (out["coords"] + back) / 2
            out["sigma"] = (out["sigma"] + out_f["sigma"][:, flip_index]) / 2
    sigma = out.get("sigma")
    if head == "heatmap":
        coords, maxvals = argmax_refined(out["maps"])
        return CropPrediction(coords, maxvals.clamp(0, 1), None)
    if test.keypoint_score == "sigma":
        scores = sigma_scores(sigma, test.sigma_score_tolerance)
    else:
        scores = torch.ones(out["coords"].shape[:-1], device=images.device)
    return CropPrediction(out["coords"], scores, sigma)
