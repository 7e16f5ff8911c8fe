"""`ihl train` and `ihl evaluate CHECKPOINT`: argument handling, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from ihl.data.synth import make_coco_synth

TINY = (
    "model.backbone=resnet18",
    "model.input_size=[64, 64]",
    "model.deconv_channels=32",
    "loss.wasserstein=none",
    "train.epochs=1",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.warmup_iters=1",
)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.head", "expected dotted.key=value"),
        ("=3", "expected dotted.key=value"),
        ("model.head=[1", "not valid YAML"),
        ("model.heed=ihl", "model.heed: unknown key"),
        ("model.input_size=[65, 64]", "multiples of 32"),
    ],
)
def test_bad_overrides_are_usage_errors(cli, tmp_path, override, message):
    result = cli("train", "--config", "sample", "--out", tmp_path, "--set", override)
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_config_is_named(cli, tmp_path):
    result = cli("train", "--config", tmp_path / "mine.yaml", "--out", tmp_path)
    assert result.exit_code == 2 and "mine.yaml" in result.output


def test_train_then_evaluate_a_tiny_model(cli, tmp_path):
    data = tmp_path / "data"
    make_coco_synth(data, 2, 1, image_size=(96, 64), max_people=2)
    sets = [arg for item in (*TINY, f"data.root={data}") for arg in ("--set", item)]
    result = cli("train", "--config", "sample", "--out", tmp_path / "run", "--device", "cpu", *sets)
    assert result.exit_code == 0, result.output
    assert "AP" in result.output
    best = tmp_path / "run/checkpoints/best.pt"
    assert best.is_file()

    out = tmp_path / "eval"
    result = cli("evaluate", best, "--out", out, "--boxes", "gt", "--no-flip", "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    assert f"{metrics['AP']:.4f}" in result.output
