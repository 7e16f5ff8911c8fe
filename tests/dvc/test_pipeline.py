"""`dvc repro` of the project's pipeline on a tiny configuration, with the real `dvc`.

The tests share one run and go in order: build, nothing to redo, metrics and plots,
then a parameter change that must re-run only what lies downstream of it.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml
from project_copy import TINY, dvc, make_project

pytestmark = pytest.mark.slow

STAGES = ["synth", "prepare", "detector", "train", "evaluate", "export"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, str]:
    """The tiny project after one `dvc repro`: (its folder, the repro's output)."""
    root = make_project(tmp_path_factory.mktemp("pipeline") / "project", TINY)
    done = dvc("repro", cwd=root)
    return root, done.stdout + done.stderr


def test_repro_builds_every_output(project):
    root, output = project
    assert sorted(ran(output)) == sorted(STAGES)
    index = json.loads((root / "data/index.json").read_text())
    assert index["splits"]["train2017"]["images"] == TINY["synth"]["train"]
    assert (root / "model/checkpoints/best.pt").is_file()
    assert (root / "model/live/plots/metrics/train/loss.tsv").is_file()
    metrics = json.loads((root / "eval/metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    # The final weights are scored; one epoch, so best.pt holds the same weights.
    assert (root / "model/checkpoints/final.pt").is_file()
    assert metrics["best_checkpoint_AP"] == metrics["AP"]
    assert metrics["best_checkpoint_epoch"] == 1
    assert 0.0 <= json.loads((root / "detector/metrics.json").read_text())["box_AP"] <= 1.0
    assert "detector.pt" in zipfile.ZipFile(root / "export/model-store/ihl.mar").namelist()
    archive = root / "export/model-store/ihl.mar"
    assert "MAR-INF/MANIFEST.json" in zipfile.ZipFile(archive).namelist()
    assert index["version"] in (root / "export/model_card.md").read_text()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 1


def test_second_repro_does_nothing(project):
    root, _ = project
    before = (root / "model/checkpoints/best.pt").stat().st_mtime_ns
    done = dvc("repro", cwd=root)
    assert ran(done.stdout) == []
    assert "Data and pipelines are up to date." in done.stdout
    assert (root / "model/checkpoints/best.pt").stat().st_mtime_ns == before


def test_metrics_and_plots_are_declared(project):
    root, _ = project
    shown = json.loads(dvc("metrics", "show", "--json", cwd=root).stdout)
    files = next(iter(shown.values()))["data"]
    written = json.loads((root / "eval/metrics.json").read_text())
    assert files["eval/metrics.json"]["data"] == {k: v for k, v in written.items() if v is not None}
    assert "loss" in files["model/live/metrics.json"]["data"]["train"]
    plots = json.loads(dvc("plots", "show", "--json", cwd=root).stdout)["data"]
    loss = plots["model/live/plots/metrics/train/loss.tsv"][0]["content"]["data"]["values"]
    assert [row["step"] for row in loss] == ["0"]
    assert "model/live/plots/metrics/val/AP.tsv" in plots


def test_missing_dataset_stops_before_any_stage(project):
    root, _ = project
    params = root / "params.yaml"
    original = params.read_text()
    lock = (root / "dvc.lock").read_text()
    params.write_text(original.replace("dataset: synth", "dataset: coco"))
    try:
        done = dvc("repro", "export", cwd=root, ok=False)
    finally:
        params.write_text(original)
    assert done.returncode != 0
    assert "No such file or directory" in done.stderr and "data/coco" in done.stderr
    assert ran(done.stdout) == []
    assert (root / "dvc.lock").read_text() == lock
    restored = dvc("repro", "prepare", cwd=root)
    assert ran(restored.stdout) == [] and "is cached" in restored.stdout
    assert "Data and pipelines are up to date." in dvc("status", cwd=root).stdout


def test_param_change_reruns_only_downstream_stages(project):
    root, _ = project
    done = dvc("exp", "run", "-S", "train.lr=0.001", cwd=root)
    assert ran(done.stdout) == ["train", "evaluate", "export"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] == 0.001
