"""The detector component called as a plain function with real artifacts: trained from
scratch when the preset's detector has no weights, its file loadable and its box AP logged."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Metrics, Model

from components import detector
from ihl.detection.models import load_detector


def test_detector_component_trains_and_scores(coco_synth, tmp_path):
    prepared = Dataset(
        name="prepared",
        uri=str(tmp_path / "prepared"),
        metadata={"root": str(coco_synth), "dataset": "synth"},
    )
    model = Model(name="model", uri=str(tmp_path / "out" / "detector.pt"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "out" / "metrics.json"))
    overrides = {"detector.epochs": 1, "detector.min_size": 96, "model.input_size": [64, 64]}
    detector.python_func(
        prepared=prepared, preset="sample", overrides=overrides, image="img", model=model,
        metrics=metrics,
    )  # fmt: skip
    _, cfg = load_detector(model.path)
    assert cfg.architecture == "fcos_small" and cfg.epochs == 1 and cfg.min_size == 96
    values = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0 <= values["box_AP"] <= 1
    assert metrics.metadata["box_AP"] == values["box_AP"]
