"""CrowdPose: the joint table, the reader and the reference's evaluation protocol."""

import json
import math

import cv2
import numpy as np
import pytest

from ihl.data.crowdpose import CrowdPoseKeypoints
from ihl.data.crowdpose_format import crowdpose_split_paths, validate_crowdpose
from ihl.data.keypoints import CROWDPOSE, get_spec
from ihl.metrics.crowdpose import (
    METRIC_KEYS,
    build_crowdpose_results,
    evaluate_crowdpose,
    rescore_bbox_rle,
)


def test_joint_table_is_the_references():
    assert get_spec("crowdpose") is CROWDPOSE
    assert CROWDPOSE.num_joints == 14
    assert CROWDPOSE.joints[12:] == ("top_head", "neck")
    assert CROWDPOSE.flip_pairs == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
    assert CROWDPOSE.flip_index[12:] == (12, 13)
    assert len(CROWDPOSE.sigmas) == 14 and CROWDPOSE.sigmas[6] == 0.107
    assert len(CROWDPOSE.skeleton) == 15
    assert all(0 <= a < 14 and 0 <= b < 14 for a, b in CROWDPOSE.skeleton)


def _person(rng, image_id, ann_id, x0, y0):
    xy = np.column_stack([x0 + rng.uniform(5, 55, 14), y0 + rng.uniform(5, 95, 14)])
    vis = np.full(14, 2)
    vis[rng.integers(0, 14)] = 0
    xy[vis == 0] = 0
    kpts = np.column_stack([xy, vis]).reshape(-1)
    return {
        "num_keypoints": int((vis > 0).sum()),
        "iscrowd": 0,
        "keypoints": [float(v) for v in kpts],
        "image_id": image_id,
        "bbox": [float(x0), float(y0), 60.0, 100.0],
        "category_id": 1,
        "id": ann_id,
    }


def make_crowdpose(root, images=4, seed=0):
    """A tiny dataset in the reference's layout, no 'area' in the annotations."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    image_list, anns = [], []
    for i in range(images):
        cv2.imwrite(str(root / "images" / f"{100 + i}.jpg"), np.full((160, 200, 3), 90, np.uint8))
        image_list.append(
            {
                "file_name": f"{100 + i}.jpg",
                "id": 100 + i,
                "height": 160,
                "width": 200,
                "crowdIndex": [0.05, 0.5, 0.9, 0.3][i % 4],
            }
        )
        anns.append(_person(rng, 100 + i, 2 * i + 1, 10, 20))
        anns.append(_person(rng, 100 + i, 2 * i + 2, 110, 40))
    data = {
        "images": image_list,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    for split in ("trainval", "test"):
        crowdpose_split_paths(root, split)[0].write_text(json.dumps(data))
    return data


def test_reader_takes_files_without_area(tmp_path):
    data = make_crowdpose(tmp_path)
    ann_file, images = crowdpose_split_paths(tmp_path, "trainval")
    ds = CrowdPoseKeypoints(ann_file, images, train=True, input_size=(64, 96), augment=False)
    assert len(ds) == len(data["annotations"])
    assert ds.spec is CROWDPOSE
    np.testing.assert_allclose(ds.areas, 60.0 * 100.0)
    sample = ds[0]
    assert sample["coords"].shape == (14, 2)
    assert validate_crowdpose(tmp_path) == []


def test_validation_names_a_test_image_without_crowd_index(tmp_path):
    data = make_crowdpose(tmp_path)
    del data["images"][2]["crowdIndex"]
    crowdpose_split_paths(tmp_path, "test")[0].write_text(json.dumps(data))
    problems = validate_crowdpose(tmp_path, decode_images=False)
    assert len(problems) == 1 and "image id 102" in problems[0] and "crowdIndex" in problems[0]


def _predictions(data, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    kpts = np.array([a["keypoints"] for a in data["annotations"]]).reshape(-1, 14, 3)
    return {
        "image_ids": np.array([a["image_id"] for a in data["annotations"]]),
        "keypoints": kpts[..., :2] + rng.normal(0, noise, kpts[..., :2].shape),
        "keypoint_scores": np.ones(kpts.shape[:2]),
        "box_scores": np.full(len(kpts), 0.9),
        "box_areas": np.full(len(kpts), 6000.0),
    }


def test_perfect_predictions_score_one_and_noise_scores_less(tmp_path):
    data = make_crowdpose(tmp_path)
    ann_file = crowdpose_split_paths(tmp_path, "test")[0]
    perfect = evaluate_crowdpose(build_crowdpose_results(_predictions(data)), ann_file)
    assert list(perfect) == list(METRIC_KEYS)
    for key in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_hard"):
        assert perfect[key] == pytest.approx(1.0), key
    noisy = evaluate_crowdpose(build_crowdpose_results(_predictions(data, noise=6.0)), ann_file)
    assert noisy["AP"] < 0.9
    empty = evaluate_crowdpose([], ann_file)
    assert empty == dict.fromkeys(METRIC_KEYS, 0.0)


def test_instance_score_is_box_plus_mean_plus_max_keypoint_score():
    scores = rescore_bbox_rle(np.array([[0.2, 0.4, 0.9], [0.0, 0.0, 0.0]]), np.array([0.5, 0.7]))
    np.testing.assert_allclose(scores, [0.5 + 0.5 + 0.9, 0.7])
    preds = {
        "image_ids": np.array([1]),
        "keypoints": np.zeros((1, 14, 2)),
        "keypoint_scores": np.full((1, 14), 0.5),
        "box_scores": np.array([0.25]),
        "box_areas": np.array([100.0]),
    }
    (result,) = build_crowdpose_results(preds)
    assert math.isclose(result["score"], 1.25) and len(result["keypoints"]) == 42
