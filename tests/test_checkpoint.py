"""Import of reference (MMPose-layout) checkpoints and our own checkpoint round trip."""

import pytest
import torch
from typer.testing import CliRunner

from ihl import config
from ihl.checkpoint import CheckpointError, import_checkpoint, load_model, save_model
from ihl.cli.main import app
from ihl.models import build_model


def _reference_state(model: torch.nn.Module, resnet: bool) -> dict:
    """Our weights under the reference's key names."""
    state = {}
    for key, value in model.state_dict().items():
        if resnet and key.startswith("head."):
            key = "head.simplebaseline_head." + key[len("head.") :]
        state[key] = value.clone()
    return state


@pytest.mark.parametrize(("preset", "resnet"), [("sample", True), ("coco_hrnet_w32", False)])
def test_import_reproduces_the_reference_model(tmp_path, preset, resnet):
    cfg = config.load(preset, {"model.pretrained": False})
    torch.manual_seed(1)
    reference = build_model(cfg.model).eval()
    src = tmp_path / "ref.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": _reference_state(reference, resnet)}, src)
    dst = import_checkpoint(src, tmp_path / "ours.pt", cfg)
    model, loaded_cfg = load_model(dst)
    assert loaded_cfg.model.backbone == cfg.model.backbone
    w, h = cfg.model.input_size
    x = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)["coords"], reference(x)["coords"])


def test_unknown_and_missing_keys_are_refused_by_name(tmp_path):
    cfg = config.load("sample")
    state = _reference_state(build_model(cfg.model), resnet=True)
    state["head.loss_module.flow.s.0.0.weight"] = torch.zeros(64, 2)
    del state["backbone.layer2.0.conv1.weight"]
    src = tmp_path / "ref.pth"
    torch.save({"state_dict": state}, src)
    dst = tmp_path / "ours.pt"
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(src, dst, cfg)
    assert "head.loss_module.flow.s.0.0.weight" in str(err.value)
    assert "backbone.layer2.0.conv1.weight" in str(err.value)
    assert not dst.exists()


def test_wrong_shapes_are_refused(tmp_path):
    cfg = config.load("sample")
    state = _reference_state(build_model(cfg.model), resnet=True)
    src = tmp_path / "ref.pth"
    torch.save(state, src)
    with pytest.raises(CheckpointError, match="final_layer.weight"):
        import_checkpoint(
            src, tmp_path / "ours.pt", config.load("sample", {"model.num_joints": 16})
        )


class Payload:
    """Stands for arbitrary pickled code in an untrusted checkpoint."""


def test_pickled_objects_are_refused(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Payload()}, src)
    with pytest.raises(CheckpointError, match="weights_only"):
        import_checkpoint(src, tmp_path / "ours.pt", config.load("sample"))


def test_cli_import_with_drop(tmp_path):
    cfg = config.load("sample")
    state = _reference_state(build_model(cfg.model), resnet=True)
    state["head.loss_module.flow.s.0.0.weight"] = torch.zeros(64, 2)
    src, dst = tmp_path / "ref.pth", tmp_path / "ours.pt"
    torch.save({"state_dict": state}, src)
    runner = CliRunner()
    refused = runner.invoke(app, ["import-checkpoint", str(src), str(dst), "-c", "sample"])
    assert refused.exit_code == 2 and "unknown keys" in refused.output
    ok = runner.invoke(
        app,
        ["import-checkpoint", str(src), str(dst), "-c", "sample", "--drop", "head.loss_module."],
    )
    assert ok.exit_code == 0, ok.output
    assert load_model(dst)[1].name == "sample"


def test_save_and_load_round_trip(tmp_path):
    cfg = config.load("sample", {"model.head": "heatmap"})
    model = build_model(cfg.model)
    path = save_model(tmp_path / "m.pt", model, cfg)
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(CheckpointError, match="not an IHL checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.pt")
        load_model(tmp_path / "other.pt")
