"""Every preset through `ihl train` and through the PyTorchJob's arguments (preset_runs)."""

from __future__ import annotations

import pytest
import yaml
from preset_runs import PRESETS, STATED, as_sets, datasets, expected, recorded

from ihl import config

__all__ = ["datasets"]


@pytest.mark.parametrize("preset", PRESETS)
def test_pytorchjob_arguments_give_the_preset(cli, preset):
    dataset = config.load(preset).data.dataset
    result = cli(
        "pipeline", "pytorchjob", "--name", "job", "--data-path", dataset, "--nodes", "1",
        "--gpus-per-node", "1", "--preset", preset, *as_sets(STATED),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(result.output)
    spec = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    train_args = command[command.index("train") + 1 :]
    chosen = train_args[train_args.index("-c") + 1]
    sets = [train_args[i + 1] for i, arg in enumerate(train_args) if arg == "--set"]
    given = cli("config", "show", chosen, *(x for item in sets for x in ("--set", item)))
    assert given.exit_code == 0, given.output
    shown_args = config.flatten(yaml.safe_load(given.output))
    del shown_args["effective_lr"]
    assert shown_args == expected(cli, preset, f"/data/{dataset}")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_ihl_train_records_the_preset(cli, datasets, tmp_path, preset):
    root = datasets[config.load(preset).data.dataset]
    result = cli(
        "train", "-c", preset, "-o", tmp_path / "run", *as_sets(STATED), "--set",
        f"data.root={root}", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recorded(tmp_path / "run" / "live" / "params.yaml") == expected(cli, preset, root)
