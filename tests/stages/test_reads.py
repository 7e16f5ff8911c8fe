"""The training loop reads its loss terms from the device every few steps, not every step,
and nothing else in a step (loss included) waits for the device."""

from __future__ import annotations

import sys

import pytest
import torch
from op_calls import OpCalls
from torch._dynamo.utils import counters

from ihl import train as stage
from ihl.train import build_optimizer, build_step, train

WAITS = frozenset(
    {
        torch.ops.aten._local_scalar_dense.default,  # .item(), bool(), float(), int()
        torch.ops.aten.nonzero.default,  # its output's size is on the device
        torch.ops.aten.masked_select.default,
    }
)
"""Operators that cannot return before the device has computed their input: on a GPU, each
call is a host sync."""


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


@pytest.mark.parametrize("wasserstein", ["exact", "sinkhorn"])
def test_a_training_step_never_waits_for_the_device(tiny_cfg, tmp_path, monkeypatch, wasserstein):
    """Between two consecutive steps of an epoch (loader, transfer, forward, the loss with its
    Wasserstein term, backward, optimizer, scheduler) no operator waits for the device.
    geomloss measures its point clouds' diameter with ``.item()`` unless it is given one."""
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.train.checkpoint_interval_iters = 0
    cfg.loss.wasserstein = wasserstein
    monkeypatch.setattr(stage, "READ_EVERY", 10**6)
    per_step: dict[int, int] = {}
    waits = OpCalls(WAITS)

    def on_step(iteration: int) -> None:
        per_step[iteration] = len(waits.calls)

    with waits:
        train(cfg, tmp_path, progress=False, on_step=on_step)
    steps_per_epoch = 5  # the tiny set: 40 persons, batches of 8
    within_epoch = [i for i in per_step if i % steps_per_epoch != 1]
    assert len(per_step) == 10 and len(within_epoch) == 8
    assert [per_step[i] - per_step[i - 1] for i in within_epoch] == [0] * 8, waits.calls


def test_the_sinkhorn_step_compiles_once(tiny_cfg, monkeypatch):
    """Under ``torch.compile`` the step with the Sinkhorn term is one graph, not one more per
    batch: a measured diameter breaks the graph and guards on its value."""
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.loss.wasserstein = "sinkhorn"
    cfg.train.compile, cfg.train.compile_backend = True, "aot_eager"
    torch._dynamo.reset()
    counters.clear()
    cpu = torch.device("cpu")
    step = build_step(cfg, cpu)
    optimizer, _ = build_optimizer(step.parameters(), cfg, 1, iters_per_epoch=1)
    b, (w, h), (mw, mh) = cfg.train.batch_size, cfg.model.input_size, cfg.model.heatmap_size
    k = cfg.model.num_joints
    graphs = []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=generator)
        targets = {
            "coords": torch.rand(b, k, 2, generator=generator),
            "weights": (torch.rand(b, k, generator=generator) > 0.2).float(),
            "heatmaps": torch.rand(b, k, mh, mw, generator=generator),
        }
        optimizer.zero_grad(set_to_none=True)
        step(images, targets)["loss"].backward()
        optimizer.step()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs == [1, 1, 1] and not counters["graph_break"], dict(counters["graph_break"])
