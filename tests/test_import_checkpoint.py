"""Importing the authors' MMEngine checkpoints (fixture made by the real mmengine package:
tests/fixtures/make_mmengine_ckpt.py) without running anything they pickle."""

import os
import sys
from pathlib import Path

import pytest
import torch

from ihl import config
from ihl.checkpoint import (
    CheckpointError,
    Skipped,
    import_checkpoint,
    load_foreign,
    load_model,
    safe_load,
    skipped_names,
)
from ihl.losses import RealNVP

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CKPT = FIXTURES / "mmengine_ckpt.pth"
CFG = FIXTURES / "mmengine_ckpt.yaml"


def test_mmengine_checkpoint_reads_without_its_classes():
    assert "mmengine" not in sys.modules
    ckpt = load_foreign(CKPT)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(ckpt)
    assert all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    assert isinstance(ckpt["optimizer"]["state"][0]["exp_avg"], torch.Tensor)
    names = skipped_names(ckpt)
    assert "mmengine.logging.history_buffer.HistoryBuffer" in names
    assert any(name.startswith("numpy") for name in names)
    assert "mmengine" not in sys.modules
    with pytest.raises(CheckpointError, match="weights_only"):
        safe_load(CKPT)  # why a plain weights-only load is not enough


def test_import_gives_the_outputs_of_the_same_weights_loaded_directly(tmp_path):
    expected = torch.load(FIXTURES / "mmengine_ckpt_expected.pt", weights_only=True)
    out = import_checkpoint(CKPT, tmp_path / "imported.pt", config.load(CFG))
    model, _ = load_model(out)
    model.eval()
    with torch.no_grad():
        got = model(expected["images"])
    torch.testing.assert_close(got["coords"], expected["coords"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["sigma"], expected["sigma"], rtol=0, atol=1e-6)
    flow = RealNVP()
    flow.load_state_dict(safe_load(out)["flow"])
    with torch.no_grad():
        log_prob = flow.log_prob(expected["points"])
    torch.testing.assert_close(log_prob, expected["flow_log_prob"], rtol=0, atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(tmp_path, where):
    evil = _Evil()
    evil.marker = tmp_path / "ran"
    state = dict(load_foreign(CKPT)["state_dict"])
    payload = {"meta": {"x": evil}, "state_dict": state}
    if where == "state_dict":
        state["head.simplebaseline_head.final_layer.bias"] = evil
    path = tmp_path / "evil.pth"
    torch.save(payload, path)
    return path


def test_pickled_code_never_runs(tmp_path):
    path = _evil_checkpoint(tmp_path, "meta")
    loaded = load_foreign(path)
    assert isinstance(loaded["meta"]["x"], Skipped)
    assert not (tmp_path / "ran").exists()
    import_checkpoint(path, tmp_path / "out.pt", config.load(CFG))
    assert not (tmp_path / "ran").exists()


def test_a_non_tensor_weight_is_refused_by_name(tmp_path):
    path = _evil_checkpoint(tmp_path, "state_dict")
    with pytest.raises(CheckpointError, match="final_layer.bias"):
        import_checkpoint(path, tmp_path / "out.pt", config.load(CFG))
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out.pt").exists()


def test_a_flow_with_another_prior_is_refused(tmp_path):
    ckpt = load_foreign(CKPT)
    state = dict(ckpt["state_dict"])
    state["head.loss_module.loss_modules.0.flow_model.cov"] = 2 * torch.eye(2)
    path = tmp_path / "prior.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="standard normal"):
        import_checkpoint(path, tmp_path / "out.pt", config.load(CFG))


def test_an_imported_checkpoint_starts_a_fine_tuning_run_flow_included(tmp_path):
    from ihl.checkpoint import init_from
    from ihl.losses import build_loss
    from ihl.models import build_model

    expected = torch.load(FIXTURES / "mmengine_ckpt_expected.pt", weights_only=True)
    cfg = config.load(CFG)
    imported = import_checkpoint(CKPT, tmp_path / "imported.pt", cfg)
    model, criterion = build_model(cfg.model), build_loss("ihl", cfg.loss)
    init_from(imported, model, criterion)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(expected["images"])["coords"], expected["coords"], rtol=0, atol=1e-6
        )
        log_prob = criterion.flow.log_prob(expected["points"])
        torch.testing.assert_close(log_prob, expected["flow_log_prob"], rtol=0, atol=1e-6)


def _nested(depth: int) -> list:
    inner: list = []
    for _ in range(depth):
        inner = [inner]
    return inner


@pytest.mark.parametrize("shape", ["self-referencing", "deeply nested"])
def test_a_self_referencing_or_deeply_nested_pickle_is_refused(cli, tmp_path, shape):
    """`ihl import-checkpoint` answers such a file with a one-line error, not a RecursionError."""
    if shape == "self-referencing":
        loop: list = []
        loop.append(loop)
        meta = {"history": loop}
    else:
        meta = {"history": _nested(5000)}
    path = tmp_path / f"{shape}.pth"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30000)  # pickling 5000 levels needs that many frames
    try:
        torch.save({"meta": meta, "state_dict": dict(load_foreign(CKPT)["state_dict"])}, path)
    finally:
        sys.setrecursionlimit(limit)
    result = cli("import-checkpoint", path, tmp_path / "out.pt", "--config", CFG)
    assert result.exit_code == 2, result.output
    assert "nests containers more than" in result.output
    assert "RecursionError" not in result.output
    assert not (tmp_path / "out.pt").exists()
