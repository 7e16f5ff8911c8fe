"""`ihl model-info` and `ihl presets`."""

import json

from typer.testing import CliRunner

from ihl import config
from ihl.cli.main import app
from ihl.models import build_model
from ihl.models.pose import count_params


def test_model_info_json():
    result = CliRunner().invoke(app, ["model-info", "sample", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info) == {"params", "gmacs", "input_size"}
    assert info["params"] == count_params(build_model(config.load("sample").model))
    assert info["input_size"] == list(config.load("sample").model.input_size)
    assert 0.01 < info["gmacs"] < 2


def test_model_info_rounds_once():
    """HRNet-W32 at 256x192 is 7.645004 GMACs: 7.65 to two decimals, not 7.64 (which rounding
    to 7.645 first, a float just under it, gave)."""
    result = CliRunner().invoke(app, ["model-info", "coco_hrnet_w32"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "params 28.54 M, 7.65 GMACs at 192x256"


def test_model_info_names_a_bad_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {backbon: resnet50}\n")
    result = CliRunner().invoke(app, ["model-info", str(path)])
    assert result.exit_code == 2
    assert "model.backbon: unknown key" in result.output


def test_presets_lists_them():
    result = CliRunner().invoke(app, ["presets"])
    assert "coco_hrnet_w32" in result.output.split()
