"""Every preset through `dvc repro train`, params.yaml switched to it (preset_runs)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from preset_runs import PRESETS, STATED, datasets, expected, recorded
from project_copy import dvc, make_project

from ihl import config

__all__ = ["datasets"]


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, datasets):
    """A project copy with every dataset folder in place (data/coco, data/mpii, ...)."""
    project = make_project(tmp_path_factory.mktemp("dvc") / "project")
    for name, folder in datasets.items():
        shutil.copytree(folder, project / "data" / name)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_dvc_repro_records_the_preset(cli, dvc_project, preset):
    dataset = config.load(preset).data.dataset
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params |= {"preset": preset, "dataset": dataset}
    for key, value in STATED.items():
        section, name = key.split(".")
        params[section] = {**params[section], name: value}
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # --no-commit: the paper models' checkpoints (up to 1.4 GB a run) stay out of DVC's
    # cache, which would otherwise keep every preset's
    dvc("repro", "--no-commit", "train", cwd=dvc_project)
    written = recorded(dvc_project / "model" / "live" / "params.yaml")
    assert written == expected(cli, preset, f"data/{dataset}")
