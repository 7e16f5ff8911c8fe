"""Training outputs, the paper's lr schedule, and refusal of bad input before writing anything."""

from __future__ import annotations

import json

import pytest
import torch

from ihl.checkpoint import load_model
from ihl.data.errors import DatasetError
from ihl.engine import PaperSchedule, build_train_dataset, train


def test_schedule_warms_up_linearly_then_steps_down_by_epoch():
    schedule = PaperSchedule(
        iters_per_epoch=10, warmup_iters=4, warmup_ratio=0.001, lr_steps=(2, 3), lr_factor=0.1
    )
    assert schedule(0) == pytest.approx(0.001)
    assert schedule(2) == pytest.approx(0.001 + 0.999 / 2)
    assert schedule(4) == schedule(19) == 1.0
    assert schedule(20) == pytest.approx(0.1)
    assert schedule(30) == pytest.approx(0.01)


def test_training_writes_checkpoints_and_logs(tiny_cfg, straight_run):
    out, metrics = straight_run
    assert set(metrics) >= {"AP", "AP50", "AR", "ARl"}

    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert {"model", "criterion", "optimizer", "scheduler", "scaler", "rng"} <= state.keys()
    assert state["state"]["epoch"] == tiny_cfg.train.epochs

    model, cfg = load_model(out / "checkpoints" / "best.pt")
    assert cfg.model == tiny_cfg.model
    assert sum(p.numel() for p in model.parameters()) > 0

    live = out / "live"
    summary = json.loads((live / "metrics.json").read_text())
    assert {"loss", "likelihood", "lr"} <= summary["train"].keys()
    assert summary["val"]["AP"] == pytest.approx(metrics["AP"])
    assert (live / "params.yaml").is_file()
    assert not (out / "dvc.yaml").exists()


@pytest.mark.parametrize("head", ["heatmap", "integral"])
def test_baseline_heads_train(tiny_cfg, tmp_path, head):
    tiny_cfg.model.head = head
    tiny_cfg.train.epochs = 1
    assert "AP" in train(tiny_cfg, tmp_path, progress=False)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_flip_probability_reaches_the_training_crops(tiny_cfg, flip_prob):
    tiny_cfg.data.flip_prob = flip_prob
    dataset = build_train_dataset(tiny_cfg)
    assert {bool(dataset[i]["flipped"]) for i in range(8)} == {flip_prob == 1.0}


def test_missing_dataset_folder_is_named_and_nothing_is_written(tiny_cfg, tmp_path):
    tiny_cfg.data.root = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="nowhere"):
        train(tiny_cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_split_is_named_and_nothing_is_written(tiny_coco, tiny_cfg, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "annotations").mkdir()
    (root / "train2017").mkdir()
    ann = json.loads((tiny_coco / "annotations" / "person_keypoints_train2017.json").read_text())
    ann["annotations"] = []
    empty = root / "annotations" / "person_keypoints_train2017.json"
    empty.write_text(json.dumps(ann))
    tiny_cfg.data.root = str(root)
    with pytest.raises(DatasetError, match="person_keypoints_train2017.json.*empty"):
        train(tiny_cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
