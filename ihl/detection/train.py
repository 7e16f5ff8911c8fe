"""Training a person detector on a COCO-format split's person boxes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ihl.config import DetectorConfig
from ihl.detection.data import PersonBoxes, collate
from ihl.detection.models import build_detector, save_detector
from ihl.device import autocast_dtype

WARMUP_ITERS = 50
"""Linear warm-up from a tenth of the learning rate: from-scratch heads diverge without it."""


def train_detector(
    cfg: DetectorConfig,
    root: str | Path,
    out: str | Path | None = None,
    split: str = "train2017",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> nn.Module:
    """Train ``cfg``'s detector (random or from its weights) for ``cfg.epochs`` on ``split``;
    the learning rate drops x0.1 for the last epoch. Saved to ``out`` when given."""
    torch.manual_seed(seed)
    model = build_detector(cfg).train()
    data = PersonBoxes(root, split, flip=True, seed=seed)
    loader = DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    amp = autocast_dtype(cfg.amp, torch.device("cpu"))
    step, start = 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        last = epoch == cfg.epochs - 1 and cfg.epochs > 1
        total = 0.0
        for images, targets in loader:
            warm = min(1.0, 0.1 + 0.9 * step / WARMUP_ITERS)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warm * (0.1 if last else 1.0)
            with torch.autocast("cpu", amp, enabled=amp is not None):
                losses = model(list(images), list(targets))
            loss = sum(part.float() for part in losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detector loss is {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            total += loss.item()
            step += 1
        log(
            f"detector epoch {epoch + 1}/{cfg.epochs}: loss {total / max(1, len(loader)):.3f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    model.eval()
    if out is not None:
        save_detector(out, model, cfg, seconds=time.perf_counter() - start)
    return model
