"""Validation during training scores detector boxes, as the reference and `ihl evaluate` do:
without the detection file it stops before anything is written, where it used to fall back
to ground-truth boxes without a word (a higher AP than the reference's protocol gives)."""

from __future__ import annotations

import shutil

import pytest

from ihl.data.errors import DatasetError
from ihl.train import train


def test_training_refuses_a_missing_detection_file(tiny_coco, tiny_cfg, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco, root)
    (root / tiny_cfg.data.detections).unlink()
    tiny_cfg.data.root = str(root)
    with pytest.raises(DatasetError, match="detection results file not found"):
        train(tiny_cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
