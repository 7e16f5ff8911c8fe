"""The prepare stage and params.yaml, without DVC: what the pipeline's stages are built on."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml
from sample_data import MPII_SAMPLE

from ihl import config
from ihl.data.errors import DatasetError
from ihl.edge.params import CONFIG_SECTIONS, config_overrides
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


def _write_params(tmp_path: Path, **changes) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text()) | changes
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_shipped_params_reproduce_their_preset():
    """params.yaml repeats its preset's values, so a retuned preset cannot be silently
    overridden by stale copies in params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    shipped = config.load(params["preset"], config_overrides(REPO / "params.yaml"))
    preset = config.load(params["preset"])
    assert config.to_dict(shipped) == config.to_dict(preset)


def test_dataset_sets_root_layout_and_joints(tmp_path):
    overrides = config_overrides(_write_params(tmp_path, dataset="mpii"))
    assert overrides["data.root"] == "data/mpii"
    assert overrides["data.dataset"] == "mpii"
    assert overrides["model.num_joints"] == 16
    assert (
        overrides["train.epochs"]
        == yaml.safe_load((REPO / "params.yaml").read_text())["train"]["epochs"]
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"data": {"root": "elsewhere"}}, "data.root follows from `dataset: synth`"),
        ({"train": 3}, "train must be a mapping"),
    ],
)
def test_bad_params_are_named(tmp_path, changes, message):
    with pytest.raises(config.ConfigError, match=message):
        config_overrides(_write_params(tmp_path, **changes))


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
    """dvc.yaml's stages list every ihl module they can import, and the train stage the
    params sections the loader reads, so no change to them goes unnoticed by DVC."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(CONFIG_SECTIONS) <= set(stages["train"]["params"])
    for stage, modules in [
        ("synth", ["ihl.data.synth"]),
        ("prepare", ["ihl.prepare"]),
        ("train", ["ihl.train", "ihl.edge.params", "ihl.edge.live"]),
        ("evaluate", ["ihl.evaluate"]),
        ("export", ["ihl.edge.export"]),
        ("detector", ["ihl.detection.train", "ihl.detection.boxap", "ihl.edge.params"]),
    ]:
        deps = [(REPO / d).resolve() for d in stages[stage]["deps"]]
        files = _import_closure(modules)
        uncovered = [f for f in files if not any(f == d or d in f.parents for d in deps)]
        assert not uncovered, f"{stage} stage does not depend on {uncovered}"


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.resolve()
    return None


def _import_closure(roots: list[str]) -> set[Path]:
    """Files of the ihl modules reachable from ``roots`` through any import statement,
    top-level or inside functions (read with ast, so nothing is imported)."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            package = ".".join(parts[:depth] if path.name == "__init__.py" else parts[: depth - 1])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.startswith("ihl")]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*anchor, base] if base else anchor)
                    if base.startswith("ihl"):
                        todo += [base, *(f"{base}.{a.name}" for a in node.names)]
    return seen
