"""COCO and MPII datasets on the real samples, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from sample_data import COCO_ANN, COCO_DETS, COCO_IMAGES, COCO_SAMPLE, MPII_SAMPLE

from ihl.data.coco import CocoKeypoints, coords_to_image
from ihl.data.coco_format import validate_coco
from ihl.data.errors import DatasetError
from ihl.data.keypoints import COCO, MPII
from ihl.data.mpii import MpiiKeypoints
from ihl.data.mpii_format import load_mpii_gt, validate_mpii
from ihl.image_io import read_image_bgr

COCO_ROOT = COCO_SAMPLE
MPII_ROOT = MPII_SAMPLE
MPII_ANN = MPII_ROOT / "annotations" / "mpii_sample.json"
MPII_IMAGES = MPII_ROOT / "images"


def coco_json() -> dict:
    return json.loads(COCO_ANN.read_text())


def write_coco(tmp_path: Path, data: dict) -> tuple[Path, Path]:
    """A one-image COCO split in tmp_path (image 785 and its one annotation)."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    shutil.copy(COCO_IMAGES / "000000000785.jpg", images)
    ann = tmp_path / "annotations" / "person_keypoints_sample.json"
    ann.parent.mkdir(exist_ok=True)
    ann.write_text(json.dumps(data))
    return ann, images


def small_coco() -> dict:
    data = coco_json()
    data["images"] = [i for i in data["images"] if i["id"] == 785]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 785]
    return data


def back_to_image(sample: dict, input_size) -> np.ndarray:
    return coords_to_image(
        sample["coords"][None],
        sample["center"][None],
        sample["scale"][None],
        [sample["rotation"]],
        input_size,
        [sample["flipped"]],
    )[0]


def test_coco_train_samples():
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES, train=True, heatmap_size=(48, 64))
    assert len(ds) == 17
    sample = ds[0]
    assert sample["image"].shape == (3, 256, 192) and sample["image"].dtype == torch.uint8
    assert sample["coords"].shape == (17, 2) and sample["coords"].dtype == torch.float32
    assert sample["weights"].shape == (17,)
    assert sample["heatmap_x"].shape == (17, 48) and sample["heatmap_y"].shape == (17, 64)
    assert sample["center"].shape == (2,) and sample["scale"].shape == (2,)
    assert {"rotation", "flipped", "image_id", "box_score", "area"} <= sample.keys()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 256, 192) and batch["center"].shape == (4, 2)


def test_coco_train_is_reproducible_and_changes_per_epoch():
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES, train=True, seed=3)
    first, again = ds[5], ds[5]
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["coords"], again["coords"])
    ds.set_epoch(1)
    other = ds[5]
    assert not torch.equal(first["coords"], other["coords"])


def test_coco_augmented_keypoints_map_back_to_the_annotation():
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES, train=True)
    index = np.asarray(COCO.flip_index)
    for i in range(len(ds)):
        sample = ds[i]
        truth = ds.keypoints[i, :, :2]
        if sample["flipped"]:
            truth = truth[index]
        labelled = sample["weights"].numpy() > 0
        np.testing.assert_allclose(
            back_to_image(sample, (192, 256))[labelled], truth[labelled], atol=1e-3
        )


def test_coco_eval_ground_truth_boxes_round_trip():
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES)
    assert len(ds) == 17 and ds.num_bad_boxes == 0
    sample = ds[0]
    assert sample["rotation"] == 0.0 and not sample["flipped"]
    assert sample["image_id"] == 785 and sample["box_score"] == 1.0
    labelled = sample["weights"].numpy() > 0
    assert labelled.sum() == 17
    np.testing.assert_allclose(back_to_image(sample, (192, 256)), ds.keypoints[0, :, :2], atol=1e-3)


def test_coco_eval_detection_boxes():
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES, detections=COCO_DETS)
    detections = json.loads(COCO_DETS.read_text())
    assert len(ds) == len(detections) and ds.num_bad_boxes == 0
    sample = ds[0]
    assert sample["box_score"] == pytest.approx(detections[0]["score"])
    assert sample["image_id"] == detections[0]["image_id"]
    assert not sample["weights"].any()
    x, y, w, h = detections[0]["bbox"]
    assert sample["area"] == pytest.approx(w * h)
    np.testing.assert_allclose(sample["center"], [x + w / 2, y + h / 2])
    confident = CocoKeypoints(COCO_ANN, COCO_IMAGES, detections=COCO_DETS, min_box_score=0.5)
    assert len(confident) == sum(d["score"] >= 0.5 for d in detections)


def test_bad_detection_boxes_are_skipped_and_counted(tmp_path):
    good = {"image_id": 785, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9}
    bad = [
        {**good, "bbox": [10, 10, 0, 80]},
        {**good, "bbox": [10, 10, -5, 80]},
        {**good, "bbox": [10, float("nan"), 50, 80]},
        {k: v for k, v in good.items() if k != "score"},
        {k: v for k, v in good.items() if k != "bbox"},
    ]
    other_class = {**good, "category_id": 3}
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([good, *bad, other_class]))
    ds = CocoKeypoints(COCO_ANN, COCO_IMAGES, detections=path)
    assert len(ds) == 1 and ds.num_bad_boxes == len(bad)
    problems = validate_coco(
        ann_file=COCO_ANN, image_dir=COCO_IMAGES, detections=path, decode_images=False
    )
    assert len(problems) == len(bad) and all(str(path) in p for p in problems)


def test_mpii_samples_round_trip():
    ds = MpiiKeypoints(MPII_ANN, MPII_IMAGES, heatmap_size=(64, 64))
    assert len(ds) == 5
    entries = json.loads(MPII_ANN.read_text())
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (3, 256, 256) and sample["image"].dtype == torch.uint8
        assert sample["coords"].shape == (16, 2) and sample["heatmap_y"].shape == (16, 64)
        labelled = sample["weights"].numpy() > 0
        assert labelled.any()
        truth = np.asarray(entries[i]["joints"]) - 1.0
        np.testing.assert_allclose(
            back_to_image(sample, (256, 256))[labelled], truth[labelled], atol=1e-3
        )
        assert sample["image_id"] == i and sample["box_score"] == 1.0
        assert sample["area"] == pytest.approx(float(np.prod(sample["scale"].numpy())))
        assert ds.image_path(i) == MPII_IMAGES / entries[i]["image"]
    first = entries[0]
    center = np.asarray(first["center"]) + [0, 15 * first["scale"]] - 1
    np.testing.assert_allclose(ds[0]["center"], center)
    np.testing.assert_allclose(ds[0]["scale"], [250 * first["scale"]] * 2)


def test_mpii_train_flips_with_its_own_joint_table():
    ds = MpiiKeypoints(MPII_ANN, MPII_IMAGES, train=True, seed=1)
    index = np.asarray(MPII.flip_index)
    assert MPII.joints[index[0]] == "l_ankle"
    seen_flip = False
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            sample = ds[i]
            truth = ds.joints[i][index] if sample["flipped"] else ds.joints[i]
            seen_flip |= sample["flipped"]
            labelled = sample["weights"].numpy() > 0
            np.testing.assert_allclose(
                back_to_image(sample, (256, 256))[labelled], truth[labelled], atol=1e-3
            )
    assert seen_flip


def test_load_mpii_gt(tmp_path):
    n = 3
    pos = np.random.default_rng(0).uniform(1, 500, size=(16, 2, n))
    missing = np.zeros((16, n), np.uint8)
    missing[6, 1] = 1
    heads = np.zeros((2, 2, n))
    heads[0] = [[11.0] * n, [21.0] * n]
    heads[1] = [[41.0] * n, [61.0] * n]
    path = tmp_path / "mpii_gt_val.mat"
    scipy.io.savemat(path, {"pos_gt_src": pos, "jnt_missing": missing, "headboxes_src": heads})
    gt = load_mpii_gt(path)
    assert gt.joints.shape == (n, 16, 2) and gt.missing.shape == (n, 16)
    np.testing.assert_allclose(gt.joints[2, 5], pos[5, :, 2] - 1)
    assert gt.missing[1, 6] and gt.missing.sum() == 1
    np.testing.assert_allclose(gt.head_boxes[0], [[10, 20], [40, 60]])
    np.testing.assert_allclose(gt.head_sizes, 0.6 * 50.0)

    scipy.io.savemat(
        path,
        {
            "pos_gt_src": pos[:, :, 0],
            "jnt_missing": missing[:, :1],
            "headboxes_src": heads[:, :, 0],
        },
    )
    one = load_mpii_gt(path)
    np.testing.assert_allclose(one.joints[0], gt.joints[0])
    assert one.head_boxes.shape == (1, 2, 2)

    scipy.io.savemat(path, {"pos_gt_src": pos, "jnt_missing": missing})
    with pytest.raises(DatasetError, match="headboxes_src"):
        load_mpii_gt(path)


def test_validate_clean_samples():
    assert validate_coco(COCO_ROOT) == []
    assert validate_mpii(MPII_ROOT) == []


# Bad input: each error names the file and the record or key.


def test_missing_image(tmp_path):
    ann, images = write_coco(tmp_path, small_coco())
    (images / "000000000785.jpg").unlink()
    ds = CocoKeypoints(ann, images)
    with pytest.raises(DatasetError, match=r"000000000785\.jpg.*annotation id 442619"):
        ds[0]
    assert any("000000000785.jpg" in p for p in validate_coco(tmp_path))


def test_unreadable_image(tmp_path):
    ann, images = write_coco(tmp_path, small_coco())
    (images / "000000000785.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"000000000785\.jpg.*cannot decode"):
        CocoKeypoints(ann, images)[0]


def test_truncated_jpeg(tmp_path):
    ann, images = write_coco(tmp_path, small_coco())
    path = images / "000000000785.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"000000000785\.jpg.*truncated"):
        CocoKeypoints(ann, images)[0]
    problems = validate_coco(tmp_path)
    assert len(problems) == 1 and "truncated" in problems[0]


def test_jpeg_with_trailing_padding_is_fine(tmp_path):
    path = tmp_path / "padded.jpg"
    path.write_bytes((COCO_IMAGES / "000000000785.jpg").read_bytes() + b"\0" * 100)
    assert read_image_bgr(path).shape == (425, 640, 3)


@pytest.mark.parametrize("key", ["bbox", "keypoints", "image_id", "num_keypoints"])
def test_annotation_missing_key(tmp_path, key):
    data = small_coco()
    del data["annotations"][0][key]
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=rf"person_keypoints_sample\.json.*442619.*'{key}'"):
        CocoKeypoints(ann, images)
    assert any(key in p and "442619" in p for p in validate_coco(tmp_path))


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_annotation_file_missing_top_level_key(tmp_path, key):
    data = small_coco()
    del data[key]
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=rf"person_keypoints_sample\.json.*'{key}'"):
        CocoKeypoints(ann, images)


def test_image_record_missing_file_name(tmp_path):
    data = small_coco()
    del data["images"][0]["file_name"]
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=r"image #0.*'file_name'"):
        CocoKeypoints(ann, images)


def test_keypoints_of_the_wrong_length(tmp_path):
    data = small_coco()
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=r"442619.*'keypoints'.*51"):
        CocoKeypoints(ann, images)


@pytest.mark.parametrize("bbox", [[10, 10, 0, 50], [10, 10, 50, -1], [10, 10, None, 5]])
def test_zero_size_box(tmp_path, bbox):
    data = small_coco()
    data["annotations"][0]["bbox"] = bbox
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=r"442619.*'bbox'"):
        CocoKeypoints(ann, images)


def test_empty_split(tmp_path):
    data = small_coco()
    for ann in data["annotations"]:
        ann["num_keypoints"] = 0
    ann, images = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match=r"person_keypoints_sample\.json.*empty"):
        CocoKeypoints(ann, images)
    assert any("empty" in p for p in validate_coco(tmp_path))


def test_missing_and_broken_annotation_files(tmp_path):
    with pytest.raises(DatasetError, match=r"nothere\.json.*not found"):
        CocoKeypoints(tmp_path / "nothere.json", COCO_IMAGES)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"broken\.json.*JSON"):
        CocoKeypoints(broken, COCO_IMAGES)
    assert validate_coco(tmp_path) == [
        f"{tmp_path / 'annotations'}: no person_keypoints_*.json files found"
    ]


def write_mpii(tmp_path: Path, entries: list) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for entry in json.loads(MPII_ANN.read_text()):
        shutil.copy(MPII_IMAGES / entry["image"], images)
    ann = tmp_path / "annotations" / "mpii_val.json"
    ann.parent.mkdir(exist_ok=True)
    ann.write_text(json.dumps(entries))
    return ann, images


@pytest.mark.parametrize("key", ["joints_vis", "scale", "image"])
def test_mpii_entry_missing_key(tmp_path, key):
    entries = json.loads(MPII_ANN.read_text())
    del entries[2][key]
    ann, images = write_mpii(tmp_path, entries)
    with pytest.raises(DatasetError, match=rf"mpii_val\.json: entry #2.*'{key}'"):
        MpiiKeypoints(ann, images)
    assert any("entry #2" in p for p in validate_mpii(tmp_path))


def test_mpii_bad_records(tmp_path):
    entries = json.loads(MPII_ANN.read_text())
    entries[1]["joints"] = entries[1]["joints"][:-1]
    entries[3]["scale"] = 0
    ann, images = write_mpii(tmp_path, entries)
    with pytest.raises(DatasetError, match=r"entry #1.*'joints'"):
        MpiiKeypoints(ann, images)
    problems = validate_mpii(tmp_path)
    assert len(problems) == 2 and "'scale'" in problems[1]


def test_mpii_missing_image_and_empty_split(tmp_path):
    entries = json.loads(MPII_ANN.read_text())
    ann, images = write_mpii(tmp_path, entries)
    (images / entries[4]["image"]).unlink()
    with pytest.raises(DatasetError, match=rf"{entries[4]['image']}.*entry #4"):
        MpiiKeypoints(ann, images)[4]
    ann.write_text("[]")
    with pytest.raises(DatasetError, match=r"mpii_val\.json.*empty"):
        MpiiKeypoints(ann, images)


def test_mpii_gt_count_must_match_the_validation_split(tmp_path):
    entries = json.loads(MPII_ANN.read_text())
    write_mpii(tmp_path, entries)
    scipy.io.savemat(
        tmp_path / "annotations" / "mpii_gt_val.mat",
        {
            "pos_gt_src": np.zeros((16, 2, 4)),
            "jnt_missing": np.zeros((16, 4)),
            "headboxes_src": np.zeros((2, 2, 4)),
        },
    )
    problems = validate_mpii(tmp_path)
    assert len(problems) == 1 and "4 people" in problems[0]
