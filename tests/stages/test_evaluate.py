"""The evaluation stage end to end: real COCO samples, synthetic MPII, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sample_data import COCO_SAMPLE

from ihl import config
from ihl.checkpoint import save_model
from ihl.data.errors import DatasetError
from ihl.data.synth import make_mpii_synth
from ihl.evaluate import evaluate
from ihl.metrics.coco import METRIC_KEYS, validate_results
from ihl.models import build_model

SMALL = {
    "model.backbone": "resnet18",
    "model.input_size": [64, 64],
    "model.deconv_channels": 32,
    "train.num_workers": 0,
}


def _checkpoint(path: Path, overrides: dict) -> Path:
    torch.manual_seed(0)
    cfg = config.load("sample", SMALL | overrides)
    return save_model(path, build_model(cfg.model), cfg)


@pytest.mark.parametrize("boxes", ["detections", "gt"])
def test_coco_sample_with_its_detection_file(tmp_path, boxes):
    ckpt = _checkpoint(tmp_path / "model.pt", {})
    metrics = evaluate(
        ckpt,
        tmp_path / "eval",
        data_root=COCO_SAMPLE,
        split="sample",
        boxes=boxes,
        detections=COCO_SAMPLE / "person_detection_results" / "sample_detections.json",
        batch_size=16,
        progress=False,
    )
    assert tuple(metrics) == METRIC_KEYS
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert tuple(written) == METRIC_KEYS
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    validate_results(results)
    image_ids = {r["image_id"] for r in results}
    assert 0 < len(image_ids) <= 7
    if boxes == "gt":
        assert len(results) <= 17
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["metrics.json", "results.json"]


def test_mpii_reports_pckh(tmp_path):
    root = tmp_path / "mpii"
    make_mpii_synth(root, num_train=1, num_val=3)
    ckpt = _checkpoint(
        tmp_path / "model.pt",
        {"model.num_joints": 16, "data.dataset": "mpii", "data.root": str(root)},
    )
    metrics = evaluate(ckpt, tmp_path / "eval", flip=False, progress=False)
    assert {"PCKh", "PCKh@0.1", "Head", "Ankle"} <= metrics.keys()
    assert {"reference_PCKh", "reference_PCKh@0.1", "reference_Head"} <= metrics.keys()
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert len(results) == len(json.loads((root / "annotations" / "mpii_val.json").read_text()))
    assert len(results[0]["keypoints"]) == 16 * 3


def test_missing_detection_file_is_named_and_nothing_is_written(tiny_coco, tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt", {"data.root": str(tiny_coco)})
    with pytest.raises(DatasetError, match="no_such.json"):
        evaluate(ckpt, tmp_path / "eval", detections=tmp_path / "no_such.json", progress=False)
    assert not (tmp_path / "eval").exists()


def test_missing_dataset_folder_is_named(tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt", {"data.root": str(tmp_path / "gone")})
    with pytest.raises(DatasetError, match="gone"):
        evaluate(ckpt, tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_the_stages_import_one_way():
    """train reuses evaluate's prediction and scoring; evaluate never leads back into train,
    and train reaches DVCLive only through the logger it is handed."""
    code = (
        "import sys, ihl.evaluate; stages = 'ihl.train' in sys.modules; import ihl.train; "
        "print(stages, 'dvclive' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
