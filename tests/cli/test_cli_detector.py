"""`ihl detector train`, and the detector behind `ihl predict` and `ihl evaluate`; the ONNX
runtime behind both."""

from __future__ import annotations

import json

import pytest

from ihl import config
from ihl.checkpoint import save_model
from ihl.models import build_model

DETECTOR = (
    "detector.min_size=96",
    "detector.max_size=128",
    "detector.epochs=1",
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("synth") / "coco"
    result = cli("synth", root, "--train", 16, "--val", 4, "--size", "128x96", "--seed", 1)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def detector(synth, cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    sets = [arg for item in DETECTOR for arg in ("--set", item)]
    result = cli("detector", "train", synth, "-o", out, *sets)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["box_AP"] <= 1 and metrics["seconds"] > 0
    detections = json.loads((out / "detections.json").read_text())
    assert all(d["category_id"] == 1 and 0 <= d["score"] <= 1 for d in detections)
    return out / "detector.pt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synth):
    cfg = config.load("sample", {"data.root": str(synth)})
    return save_model(tmp_path_factory.mktemp("ckpt") / "sample.pt", build_model(cfg.model), cfg)


def test_predict_without_boxes_needs_a_detector_and_uses_it(
    cli, checkpoint, detector, synth, tmp_path
):
    image = sorted((synth / "val2017").iterdir())[0]
    result = cli("predict", checkpoint, image, "--out", tmp_path / "a")
    assert result.exit_code == 2 and "--detector FILE" in result.output
    result = cli(
        "predict",
        checkpoint,
        image,
        "--out",
        tmp_path / "a",
        "--detector",
        detector,
        "--whole-image",
    )
    assert result.exit_code == 2 and "one of --boxes, --detector" in result.output

    found = []
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        result = cli(
            "predict", checkpoint, image, "--out", out, "--detector", detector, "--runtime", runtime
        )
        assert result.exit_code == 0, result.output
        assert (out / "detector.onnx").is_file() == (runtime == "onnx")
        found.append(json.loads((out / "predictions.json").read_text()))
    torch_people, onnx_people = found
    assert len(torch_people) == len(onnx_people)
    for a, b in zip(torch_people, onnx_people, strict=True):
        assert a["bbox"] != [0, 0, 128, 96] and 0 <= a["box_score"] <= 1
        assert a["bbox"] == b["bbox"]
        assert max(abs(x - y) for x, y in zip(a["keypoints"], b["keypoints"], strict=True)) < 1e-3


def test_evaluate_with_detector_boxes_and_onnx_runtime(cli, checkpoint, detector, synth, tmp_path):
    metrics = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        result = cli(
            "evaluate", checkpoint, "-o", out, "--data-root", synth, "--boxes", "detector",
            "--detector", detector, "--runtime", runtime,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        metrics[runtime] = json.loads((out / "metrics.json").read_text())
        assert (out / "detections.json").is_file()
        assert (out / "detector.onnx").is_file() == (runtime == "onnx")
    assert "box_AP" in metrics["torch"]
    assert round(metrics["torch"]["box_AP"], 3) == round(metrics["onnx"]["box_AP"], 3)
    assert round(metrics["torch"]["AP"], 3) == round(metrics["onnx"]["AP"], 3)
    result = cli(
        "evaluate", checkpoint, "-o", tmp_path / "x", "--boxes", "gt", "--detector", detector
    )
    assert result.exit_code == 2 and "--detector goes with --boxes detector" in result.output
