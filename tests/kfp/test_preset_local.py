"""Every preset through the Kubeflow prepare and train components under kfp.local
(preset_runs). No ``from __future__ import annotations``: kfp reads the pipeline's
annotations as types."""

import pytest
from preset_runs import PRESETS, STATED, datasets, expected, recorded

from ihl import config

__all__ = ["datasets"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_kfp_local_train_records_the_preset(cli, datasets, tmp_path, preset):
    from kfp import dsl, local

    from components import prepare, train

    dataset = config.load(preset).data.dataset
    volume = tmp_path / "volume"
    volume.mkdir()

    @dsl.pipeline(name="preset-path")
    def prepare_and_train(data_path: str):
        prepared = prepare(
            dataset=dataset, data_source="volume", data_path=data_path, dvc_repo="",
            dvc_rev="", volume=str(volume), image="local",
        )  # fmt: skip
        train(
            prepared=prepared.outputs["prepared"], preset=preset, epochs=0, num_gpus=0,
            overrides=STATED, volume=str(volume), image="local",
        )  # fmt: skip

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "tasks"))
    prepare_and_train(data_path=str(datasets[dataset]))
    (run_dir,) = (volume / "runs").iterdir()
    written = recorded(run_dir / "live" / "params.yaml")
    assert written == expected(cli, preset, str(datasets[dataset].resolve()))
