"""The prepare stage and params.yaml, without DVC: what the pipeline's stages are built on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dvc_deps
import pytest
import yaml
from sample_data import MPII_SAMPLE

from ihl import config
from ihl.data.errors import DatasetError
from ihl.edge.params import DETECTOR_SECTIONS, TRAIN_SECTIONS, params_config
from ihl.prepare import fingerprint, prepare

REPO = Path(__file__).resolve().parents[2]


def test_prepare_writes_counts_and_a_fingerprint(coco_synth, tmp_path):
    summary = prepare("synth", coco_synth, tmp_path / "out")
    written = json.loads((tmp_path / "out/index.json").read_text())
    assert written == summary
    assert summary["layout"] == "coco"
    assert summary["splits"]["train2017"]["images"] == 8
    assert summary["splits"]["val2017"]["images"] == 4
    assert summary["version"] == f"synth-{summary['fingerprint'][:12]}"


def test_prepare_reads_the_mpii_layout(tmp_path):
    summary = prepare("mpii", MPII_SAMPLE, tmp_path)
    entries = json.loads((MPII_SAMPLE / "annotations/mpii_sample.json").read_text())
    assert summary["splits"] == {
        "sample": {"images": len({e["image"] for e in entries}), "persons": len(entries)}
    }


def test_fingerprint_follows_content_not_location(coco_synth, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(coco_synth, copy)
    assert fingerprint(copy) == fingerprint(coco_synth)
    image = next((copy / "val2017").glob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")
    assert fingerprint(copy) != fingerprint(coco_synth)


@pytest.mark.parametrize(
    ("dataset", "root", "message"),
    [
        ("cocoa", "synth", "unknown dataset 'cocoa': expected one of synth, coco, mpii"),
        ("coco", "missing", "coco dataset folder not found"),
        ("mpii", "synth", "is not a valid mpii dataset"),
    ],
)
def test_prepare_refuses_bad_input_and_writes_nothing(coco_synth, tmp_path, dataset, root, message):
    folder = coco_synth if root == "synth" else tmp_path / root
    with pytest.raises(DatasetError, match=message):
        prepare(dataset, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_command_says_how_to_get_missing_data(tmp_path):
    from typer.testing import CliRunner

    from ihl.cli.main import app

    result = CliRunner().invoke(
        app, ["prepare", "--dataset", "coco", "--root", str(tmp_path / "coco"), "--out", "o"]
    )
    assert result.exit_code == 2
    assert "ihl data add coco PATH" in result.output
    assert f"ihl data pull {tmp_path / 'coco'}.dvc" in result.output


def _committed_params() -> dict:
    """params.yaml as committed (HEAD), whatever a user's experiment did to the workspace."""
    text = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return yaml.safe_load(text)


def _write_params(tmp_path: Path, **changes) -> Path:
    params = _committed_params() | changes
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_shipped_params_change_nothing_in_their_preset(tmp_path):
    """params.yaml holds the user's changes only: as shipped, the main job trains its preset
    exactly, with the dataset's folder."""
    params = _committed_params()
    shipped = params_config(_write_params(tmp_path), TRAIN_SECTIONS + DETECTOR_SECTIONS)
    preset = config.load(params["preset"], {"data.root": f"data/{params['dataset']}"})
    assert config.to_dict(shipped) == config.to_dict(preset)


def test_an_experiment_in_the_workspace_does_not_fail_the_shipped_test(tmp_path, monkeypatch):
    """`dvc exp run -S train.epochs=3` leaves its change in the workspace params.yaml; the
    shipped-params test reads the committed file, so the suite still passes after it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(_committed_params()))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "params.yaml"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "shipped"], cwd=repo, check=True)
    (repo / "params.yaml").write_text(
        yaml.safe_dump(_committed_params() | {"train": {"epochs": 3}})
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", repo)
    test_shipped_params_change_nothing_in_their_preset(tmp_path)


@pytest.mark.parametrize("preset", config.preset_names())
def test_choosing_a_preset_gives_exactly_that_preset(tmp_path, preset):
    """`dvc exp run -S preset=P -S dataset=D` trains `ihl config show P`, only the data folder
    changed: nothing of the default preset is layered over it."""
    chosen = config.load(preset)
    dataset = chosen.data.dataset
    resolved = params_config(
        _write_params(tmp_path, preset=preset, dataset=dataset), TRAIN_SECTIONS + DETECTOR_SECTIONS
    )
    expected = config.to_dict(chosen) | {
        "data": {**config.to_dict(chosen)["data"], "root": f"data/{dataset}"}
    }
    assert config.to_dict(resolved) == expected


def test_dataset_sets_root_layout_and_joints(tmp_path):
    cfg = params_config(
        _write_params(tmp_path, dataset="mpii", train={"epochs": 3}), TRAIN_SECTIONS
    )
    assert cfg.data.root == "data/mpii"
    assert cfg.data.dataset == "mpii"
    assert cfg.model.num_joints == 16
    assert cfg.train.epochs == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"data": {"root": "elsewhere"}}, "data.root: set by the run's dataset"),
        ({"train": 3}, "train must be a mapping"),
    ],
)
def test_bad_params_are_named(tmp_path, changes, message):
    with pytest.raises(config.ConfigError, match=message):
        params_config(_write_params(tmp_path, **changes), TRAIN_SECTIONS)


def test_train_command_names_a_bad_params_key(tmp_path):
    from typer.testing import CliRunner

    from ihl.cli.main import app

    params = _write_params(tmp_path, model={"heed": "ihl"})
    result = CliRunner().invoke(
        app, ["train", "-c", "sample", "--params", str(params), "-o", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert "model.heed: unknown key" in result.output


def test_stages_declare_every_section_and_module_they_read():
    """dvc.yaml's stages list the params sections their loader reads and, as
    scripts/dvc_deps.py makes them, every ihl module they can import (no more, no less), so
    no change to them goes unnoticed by DVC and none re-runs a stage that cannot use it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(TRAIN_SECTIONS) <= set(stages["train"]["params"])
    assert set(DETECTOR_SECTIONS) <= set(stages["detector"]["params"])
    assert dvc_deps.drifted(REPO / "dvc.yaml") == []


def test_a_missing_or_stale_code_dep_is_caught(tmp_path):
    text = (REPO / "dvc.yaml").read_text()
    for edited in (
        text.replace("      - ihl/edge/live.py\n", "", 1),
        text.replace("      - ihl/train.py\n", "      - ihl/train.py\n      - ihl/predict.py\n", 1),
    ):
        (tmp_path / "dvc.yaml").write_text(edited)
        assert dvc_deps.drifted(tmp_path / "dvc.yaml") == ["train"]
