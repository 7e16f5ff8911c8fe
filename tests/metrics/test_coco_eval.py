import json
import math

import numpy as np
import pytest
from sample_data import COCO_ANN

from ihl.data.keypoints import COCO
from ihl.metrics.coco import (
    METRIC_KEYS,
    build_results,
    evaluate_coco,
    oks_nms,
    pairwise_oks,
    rescore,
    score_results_file,
    write_metrics,
    write_results,
)

ANN_FILE = COCO_ANN


@pytest.fixture(scope="module")
def annotations():
    return [a for a in json.loads(ANN_FILE.read_text())["annotations"] if a["num_keypoints"] > 0]


def gt_as_results(annotations, noise_level=0.0, seed=0):
    """Ground truth given back as results, optionally jittered on the OKS scale."""
    rng = np.random.default_rng(seed)
    sigmas = np.asarray(COCO.sigmas)[:, None]
    results = []
    for ann in annotations:
        kpts = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        kpts[:, :2] += (
            noise_level * rng.standard_normal((len(kpts), 2)) * sigmas * math.sqrt(ann["area"])
        )
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": kpts.ravel().tolist(),
                "score": 1.0,
            }
        )
    return results


def test_ground_truth_scores_perfect(annotations):
    metrics = evaluate_coco(gt_as_results(annotations), ANN_FILE)
    assert list(metrics) == list(METRIC_KEYS)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["AR"] == pytest.approx(1.0, abs=1e-6)


def test_noise_lowers_ap_monotonically(annotations):
    aps = [
        evaluate_coco(gt_as_results(annotations, level), ANN_FILE)["AP"]
        for level in (0.0, 0.5, 1.0, 2.0)
    ]
    assert all(a > b for a, b in zip(aps, aps[1:], strict=False)), aps


def test_empty_results_score_zero():
    assert evaluate_coco([], ANN_FILE) == dict.fromkeys(METRIC_KEYS, 0.0)


def test_unknown_image_ids_are_named(annotations):
    results = gt_as_results(annotations)
    results[0] = {**results[0], "image_id": 123456789}
    with pytest.raises(ValueError, match="123456789"):
        evaluate_coco(results, ANN_FILE)


def test_verbose_prints_summary(annotations, capsys):
    evaluate_coco(gt_as_results(annotations), ANN_FILE)
    assert "Average Precision" not in capsys.readouterr().out
    evaluate_coco(gt_as_results(annotations), ANN_FILE, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_pairwise_oks_by_hand():
    # variances (2 sigma)^2 = (1, 0.25); squared distances (4, 1); mean area 200.
    a = np.array([[0.0, 0.0], [10.0, 10.0]])
    b = np.array([[2.0, 0.0], [10.0, 11.0]])
    oks = pairwise_oks(np.stack([a, b]), np.array([100.0, 300.0]), sigmas=(0.5, 0.25))
    expected = (math.exp(-4 / 1 / 200 / 2) + math.exp(-1 / 0.25 / 200 / 2)) / 2
    assert oks[0, 1] == pytest.approx(expected)
    assert oks[1, 0] == pytest.approx(expected)
    assert oks[0, 0] == pytest.approx(1.0)


def test_oks_nms_drops_duplicate_keeps_other_person():
    rng = np.random.default_rng(0)
    person = rng.uniform(100, 200, (17, 2))
    duplicate = person + rng.normal(0, 0.5, (17, 2))
    other = person + 300.0
    kpts = np.stack([duplicate, person, other])
    keep = oks_nms(kpts, np.full(3, 100.0 * 100.0), np.array([0.8, 0.9, 0.7]))
    assert keep.tolist() == [1, 2]


def test_oks_nms_empty():
    assert oks_nms(np.zeros((0, 17, 2)), np.zeros(0), np.zeros(0)).size == 0


def test_rescore_formula():
    scores = np.array([[0.9, 0.1, 0.5, 0.2], [0.1, 0.0, 0.2, 0.15]])
    out = rescore(scores, np.array([0.5, 0.8]))
    assert out[0] == pytest.approx(0.5 * (0.9 + 0.5) / 2)  # 0.2 is not above 0.2
    assert out[1] == 0.0
    assert rescore(np.ones(17), 0.7) == pytest.approx(0.7)


def test_build_results_end_to_end():
    rng = np.random.default_rng(1)
    person = rng.uniform(50, 150, (17, 2))
    kpts = np.stack([person, person + 0.2, person + 400.0, person])
    kpt_scores = np.stack([np.full(17, 0.9), np.full(17, 0.8), np.full(17, 0.6), np.full(17, 0.1)])
    predictions = {
        "image_ids": np.array([7, 7, 7, 8]),
        "keypoints": kpts,
        "keypoint_scores": kpt_scores,
        "box_scores": np.array([1.0, 1.0, 0.5, 0.9]),
        "box_areas": np.full(4, 10000.0),
    }
    results = build_results(predictions)
    assert [(r["image_id"], r["score"]) for r in results] == [
        (7, pytest.approx(0.9)),
        (7, pytest.approx(0.3)),
        (8, 0.0),
    ]
    first = np.asarray(results[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(first[:, :2], person)
    np.testing.assert_allclose(first[:, 2], 0.9)
    assert all(r["category_id"] == 1 for r in results)
    json.dumps(results)


def test_build_results_rejects_bad_shapes():
    with pytest.raises(ValueError, match="keypoint_scores"):
        build_results(
            {
                "image_ids": [1],
                "keypoints": np.zeros((1, 17, 2)),
                "keypoint_scores": np.zeros((1, 16)),
                "box_scores": [1.0],
                "box_areas": [1.0],
            }
        )


def test_results_file_round_trip(annotations, tmp_path):
    path = write_results(gt_as_results(annotations), tmp_path / "out" / "results.json")
    metrics = score_results_file(path, ANN_FILE)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-6)
    metrics_path = write_metrics({**metrics, "APm": math.nan}, tmp_path / "metrics.json")
    written = json.loads(metrics_path.read_text())
    assert written["AP"] == pytest.approx(1.0) and written["APm"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out"]


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("[]")
    with pytest.raises(TypeError):
        write_results([{"score": object()}], target)
    assert target.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"image_id": 785, "category_id": 1, "keypoints": [0.0] * 51},
            "record 1: missing key 'score'",
        ),
        (
            {"image_id": 785, "category_id": 1, "keypoints": [0.0] * 50, "score": 1.0},
            "record 1: key 'keypoints' must hold 51",
        ),
        (
            {"image_id": "785", "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0},
            "record 1: key 'image_id'",
        ),
        (
            {"category_id": 1, "keypoints": [0.0] * 51, "score": 1.0},
            "record 1: missing key 'image_id'",
        ),
    ],
)
def test_malformed_results_file_names_record_and_key(tmp_path, record, message):
    good = {"image_id": 785, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good, record]))
    with pytest.raises(ValueError, match=message):
        score_results_file(path, ANN_FILE)


def test_results_file_not_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        score_results_file(path, ANN_FILE)
