"""Every preset through the Kubeflow prepare and train components under kfp.local
(preset_runs): one pipeline per dataset, its data prepared once and trained by each of its
presets. No ``from __future__ import annotations``: kfp reads the pipeline's annotations as
types."""

import pytest
from preset_runs import PRESETS, STATED, datasets, expected, recorded

from ihl import config

__all__ = ["datasets"]

BY_DATASET = {}
for name in PRESETS:
    BY_DATASET.setdefault(config.load(name).data.dataset, []).append(name)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(BY_DATASET))
def test_kfp_local_train_records_each_preset(cli, datasets, tmp_path, dataset):
    from kfp import dsl, local

    from components import prepare, train

    presets = BY_DATASET[dataset]
    volume = tmp_path / "volume"
    volume.mkdir()

    @dsl.pipeline(name="preset-paths")
    def prepare_and_train(data_path: str):
        prepared = prepare(
            dataset=dataset, data_source="volume", data_path=data_path, dvc_repo="",
            dvc_rev="", volume=str(volume), image="local",
        )  # fmt: skip
        for preset in presets:
            train(
                prepared=prepared.outputs["prepared"], preset=preset, epochs=0, num_gpus=0,
                overrides=STATED, volume=str(volume), image="local",
            )  # fmt: skip

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "tasks"))
    prepare_and_train(data_path=str(datasets[dataset]))
    runs = {run.name.rsplit("-", 1)[0]: run for run in (volume / "runs").iterdir()}
    assert sorted(runs) == sorted(presets)
    root = str(datasets[dataset].resolve())
    for preset in presets:
        written = recorded(runs[preset] / "live" / "params.yaml")
        assert written == expected(cli, preset, root), preset
