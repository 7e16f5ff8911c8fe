"""train.compile: the step runs compiled, checkpoints keep the eager model's keys and resume.

The compiled runs use the aot_eager backend: it traces forward and backward as inductor does
but generates no code, which on this CPU takes seconds instead of minutes.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from ihl import config
from ihl.checkpoint import CheckpointError, load_model, safe_load
from ihl.config import ConfigError
from ihl.train import build_step, check_resumable, train


class Stop(Exception):
    """Ends a run after a given step, as a crash would."""


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_compiled_run_checkpoints_plain_keys_resumes_and_validates_eager(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs = tiny_cfg.train.val_interval = 1
    eager = build_step(tiny_cfg, torch.device("cpu"))
    tiny_cfg.train.compile, tiny_cfg.train.compile_backend = True, "aot_eager"
    out = tmp_path / "run"

    def stop(iteration: int) -> None:
        if iteration == 4:
            raise Stop

    before = graphs()
    with pytest.raises(Stop):
        train(tiny_cfg, out, progress=False, on_step=stop)
    assert graphs() > before, "no graph was compiled: the step ran eager"
    latest = safe_load(out / "checkpoints" / "latest.pt")
    assert latest["state"]["iteration"] == 3  # checkpoint_interval_iters
    assert list(latest["model"]) == list(eager.model.state_dict())
    assert list(latest["criterion"]) == list(eager.criterion.state_dict())

    seen: list[int] = []
    before = graphs()
    train(tiny_cfg, out, resume=True, progress=False, on_step=seen.append)
    assert seen == [4, 5], "the run did not continue from latest.pt"
    assert graphs() == before, "validation compiled a graph (it should run eager)"
    for name in ("best.pt", "final.pt"):
        model, cfg = load_model(out / "checkpoints" / name)  # strict: the plain keys
        assert cfg.train.compile
    assert list(safe_load(out / "checkpoints" / "final.pt")["model"]) == list(
        eager.model.state_dict()
    )


def test_resume_may_switch_compile_and_reads_states_from_before_it(tiny_cfg, tmp_path):
    older = config.to_dict(tiny_cfg)
    for key in ("compile", "compile_mode", "compile_backend"):
        del older["train"][key]
    state = {"config": older, "data_fingerprint": None}
    tiny_cfg.train.compile = True
    check_resumable(state, tiny_cfg, None, tmp_path / "latest.pt")
    tiny_cfg.train.lr = 0.5
    with pytest.raises(CheckpointError, match=r"train.lr: 0.002 -> 0.5"):
        check_resumable(state, tiny_cfg, None, tmp_path / "latest.pt")


def test_inductor_modes_are_refused_with_another_backend():
    with pytest.raises(ConfigError, match="train.compile_mode"):
        config.load(
            "sample", {"train.compile_mode": "max-autotune", "train.compile_backend": "aot_eager"}
        )
    assert not any(
        config.load(name).train.compile
        for name in config.preset_names()
        if name != "coco_res50_fast"
    )
