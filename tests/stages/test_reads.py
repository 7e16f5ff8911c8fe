"""The training loop reads its loss terms from the device every few steps, not every step."""

from __future__ import annotations

import sys

import torch

from ihl import train as stage
from ihl.train import train


def test_loss_terms_are_read_every_n_steps_not_every_step(tiny_cfg, tmp_path, monkeypatch):
    """Each read waits for the GPU; 10 steps with reads every 4 make 3 reads (4, 8, and
    the epoch ends at 5 and 10), never one per step."""
    reads, postfixes = [], []

    def counting(real):
        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == stage.__file__:
                reads.append(real.__name__)
            return real(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    real_postfix = stage.tqdm.set_postfix
    monkeypatch.setattr(
        stage.tqdm,
        "set_postfix",
        lambda self, *a, **k: postfixes.append(k) or real_postfix(self, *a, **k),
    )
    monkeypatch.setattr(stage, "READ_EVERY", 4)
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.train.checkpoint_interval_iters = 0
    train(cfg, tmp_path, progress=False)
    # two tensors per read (the summed terms and the per-rank flags); 10 steps in all
    assert len(reads) == 2 * 4
    assert len(postfixes) == 4 and all(p.get("refresh") is False for p in postfixes)
