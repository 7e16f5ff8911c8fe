"""`ihl evaluate`: scoring a results file, and the argument combinations it refuses."""

from __future__ import annotations

import json

import pytest
from sample_data import COCO_SAMPLE

ANN = COCO_SAMPLE / "annotations/person_keypoints_sample.json"


@pytest.fixture
def gt_results(tmp_path):
    """The sample's ground-truth keypoints written as a results file."""
    annotations = json.loads(ANN.read_text())["annotations"]
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in annotations
        if a["num_keypoints"] > 0
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_ground_truth_as_results_scores_ap_one(cli, gt_results, tmp_path):
    result = cli("evaluate", "--results", gt_results, "--ann", ANN, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "AP    1.0000" in result.output
    metrics = json.loads((tmp_path / "m/metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a CHECKPOINT to evaluate, or --results"),
        (("model.pt", "--results", "r.json"), "not both"),
        (("--results", "r.json"), "--results needs --ann"),
        (("--results", "r.json", "--ann", "a.json", "--data-root", "d"), "--data-root only apply"),
        (("--results", "r.json", "--ann", "a.json", "--no-flip"), "--no-flip only apply"),
        (("model.pt",), "needs --out"),
        (("model.pt", "--out", "o", "--images", "imgs"), "--images goes with --ann"),
        (("model.pt", "--out", "o", "--boxes", "nope.json"), "detection-results file"),
    ],
)
def test_bad_combinations_are_usage_errors(cli, args, message):
    result = cli("evaluate", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_files_are_named(cli, gt_results, tmp_path):
    result = cli("evaluate", "--results", tmp_path / "nope.json", "--ann", ANN)
    assert result.exit_code == 2 and "results file not found" in result.output
    assert "nope.json" in result.output
    result = cli("evaluate", "--results", gt_results, "--ann", tmp_path / "ann.json")
    assert result.exit_code == 2 and "ann.json" in result.output
    result = cli("evaluate", tmp_path / "model.pt", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_a_malformed_results_file_names_the_record(cli, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": 785, "category_id": 1, "score": 1.0}]))
    result = cli("evaluate", "--results", path, "--ann", ANN)
    assert result.exit_code == 2
    assert "record 0: missing key 'keypoints'" in result.output
