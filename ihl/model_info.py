"""Size and cost of a configured model: parameters and multiply-adds."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ihl.config import Config
from ihl.models import build_model
from ihl.models.pose import count_params


def model_info(cfg: Config) -> dict:
    """Parameters of the inference model (the training-only flow excluded) and GMACs per crop
    (``gmacs``: billions of multiply-adds, kept to six decimals so that a printed figure is
    rounded once).

    Multiply-adds are counted by torch's FlopCounterMode (convolutions, transposed
    convolutions and matrix products, each multiply-add counted once; BN, ReLU,
    additions and the IHL normalisation are not counted). Transposed convolutions
    cost Cin*Cout*k*k per *input* pixel, which is what their arithmetic is.
    """
    model_cfg = cfg.model.model_copy(update={"pretrained": False})
    model = build_model(model_cfg).eval()
    w, h = model_cfg.input_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, h, w))
    return {
        "params": count_params(model),
        "gmacs": round(counter.get_total_flops() / 2 / 1e9, 6),
        "input_size": [w, h],
    }
