"""`ihl export`: the archive, the KServe folder and the model card, in the registry layout."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from serving.conftest import BATCH_SIZE, MAX_BATCH_DELAY_MS
from typer.testing import CliRunner

from ihl import config
from ihl.cli.main import app
from ihl.data.keypoints import COCO
from ihl.edge.export import ExportError, code_version, export_model, serving_dir


def _archive(export_dir) -> zipfile.ZipFile:
    return zipfile.ZipFile(export_dir / "model-store" / "ihl.mar")


def test_layout_is_the_registry_layout(export_dir):
    files = sorted(str(p.relative_to(export_dir)) for p in export_dir.rglob("*") if p.is_file())
    assert files == ["config/config.properties", "model-store/ihl.mar", "model_card.md"]
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")]


def test_archive_is_self_describing(export_dir, serving_checkpoint, served_model):
    model, cfg = served_model
    with _archive(export_dir) as mar:
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        assert manifest["model"]["modelName"] == "ihl"
        assert manifest["model"]["modelVersion"] == "3"
        assert manifest["model"]["handler"] == "ihl_handler.py"
        assert manifest["model"]["configFile"] == "model-config.yaml"
        assert set(mar.namelist()) >= {
            "model.pt", "config.yaml", "keypoints.json", "model_card.md", "model_card.json",
            "ihl_handler.py", "model-config.yaml",
        }  # fmt: skip
        weights = torch.load(io.BytesIO(mar.read("model.pt")), weights_only=True)
        full_config = yaml.safe_load(mar.read("config.yaml"))
        joints = json.loads(mar.read("keypoints.json"))
        card = json.loads(mar.read("model_card.json"))
        serving = yaml.safe_load(mar.read("model-config.yaml"))
    assert set(weights) == {"format", "config", "model"}  # no optimizer state in a served model
    for key, value in model.state_dict().items():
        assert torch.equal(weights["model"][key], value), key
    assert config.from_dict(full_config) == cfg
    assert joints["keypoint_names"] == list(COCO.joints)
    assert joints["skeleton"] == [list(p) for p in COCO.skeleton]
    assert joints["sigmas"] == list(COCO.sigmas)
    assert card["metrics"] == {"AP": 0.125, "AP50": 0.5}
    assert card["data_version"] == "synth@abc123"
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["code_version"]
    assert serving["batchSize"] == BATCH_SIZE
    assert serving["maxBatchDelay"] == MAX_BATCH_DELAY_MS
    assert serving["handler"]["max_boxes"] > 0


def test_model_card_markdown(export_dir):
    card = (export_dir / "model_card.md").read_text()
    assert "# Model card: ihl 3" in card
    assert "| AP | 0.1250 |" in card
    assert "synth@abc123" in card
    assert "code version" in card


def test_kserve_config_names_the_archive(export_dir):
    lines = (export_dir / "config" / "config.properties").read_text().splitlines()
    props = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["service_envelope"] == "kserve"
    assert props["enable_model_api"] == "false"
    snapshot = json.loads(props["model_snapshot"])
    entry = snapshot["models"]["ihl"]["3"]
    assert (export_dir / "model-store" / entry["marName"]).is_file()
    assert entry["defaultVersion"] is True
    assert entry["batchSize"] == 1


def test_refuses_to_overwrite_and_bad_names(serving_checkpoint, export_dir, tmp_path):
    before = (export_dir / "model-store" / "ihl.mar").stat().st_mtime_ns
    with pytest.raises(ExportError, match="not empty"):
        export_model(serving_checkpoint, export_dir)
    assert (export_dir / "model-store" / "ihl.mar").stat().st_mtime_ns == before
    with pytest.raises(ExportError, match="model name 'my model'"):
        export_model(serving_checkpoint, tmp_path / "x", name="my model")
    with pytest.raises(ExportError, match="version '../1'"):
        export_model(serving_checkpoint, tmp_path / "x", version="../1")
    assert not (tmp_path / "x").exists()


def test_cli_export_and_its_errors(serving_checkpoint, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "a")])
    assert missing.exit_code == 2
    assert "nope.pt" in missing.output
    bad_metrics = tmp_path / "metrics.json"
    bad_metrics.write_text("[1, 2]")
    args = ["export", str(serving_checkpoint), "-o", str(tmp_path / "a")]
    refused = runner.invoke(app, [*args, "--metrics", str(bad_metrics)])
    assert refused.exit_code == 2
    assert "flat JSON metrics" in refused.output
    assert not (tmp_path / "a").exists()
    done = runner.invoke(app, [*args, "--name", "pose"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "a" / "model-store" / "pose.mar").is_file()
    again = runner.invoke(app, [*args, "--name", "pose"])
    assert again.exit_code == 2
    assert "is not empty; pass --overwrite" in again.output  # the option the command has


def test_code_version_without_git_is_the_image_revision(monkeypatch):
    """The container images have no git: the REVISION they were built with names the code."""

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr("ihl.edge.export.subprocess.run", no_git)
    monkeypatch.setenv("IHL_REVISION", "0123abc")
    assert code_version() == "0123abc"
    monkeypatch.setenv("IHL_REVISION", "unknown")
    assert code_version().startswith("ihl ")
    monkeypatch.delenv("IHL_REVISION")
    assert code_version().startswith("ihl ")


def test_a_checkout_finds_its_serving_files_and_revision(monkeypatch):
    """Without IHL_SERVING_DIR, export reads the repository's serving/ folder and names the
    checkout's git revision (both found from the module's own place in the repository)."""
    monkeypatch.delenv("IHL_SERVING_DIR", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert serving_dir() == repo / "serving"
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_version().removesuffix("+dirty") == head
