"""The synthetic datasets: exact layouts, honest visibility, determinism, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from ihl.data import synth
from ihl.data.keypoints import COCO, MPII
from ihl.data.mpii_format import load_mpii_gt, validate_mpii
from ihl.data.synth import (
    MIN_KEYPOINT_AREA,
    MIN_VISIBLE_AREA,
    make_coco_synth,
    make_mpii_synth,
    render_scene,
)
from ihl.data.synth import coco as coco_synth
from ihl.data.synth import mpii as mpii_synth
from ihl.data.synth.figure import JOINT_PARTS

COCO_ANN = "annotations/person_keypoints_{}2017.json"
DETS = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "coco"
    make_coco_synth(out, num_train=12, num_val=60, seed=3)
    return out


@pytest.fixture(scope="module")
def scenes() -> list[synth.Scene]:
    return [render_scene(np.random.default_rng([7, i])) for i in range(120)]


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    make_coco_synth(tmp_path / "a", 5, 4, seed=0)
    make_coco_synth(tmp_path / "b", 5, 4, seed=0)
    make_coco_synth(tmp_path / "c", 5, 4, seed=1)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".json") or k.endswith(".jpg"))


def test_coco_files_have_the_coco_structure(coco_dir):
    from pycocotools.coco import COCO as CocoApi

    for split in ("train", "val"):
        api = CocoApi(str(coco_dir / COCO_ANN.format(split)))
        raw = json.loads((coco_dir / COCO_ANN.format(split)).read_text())
        assert {"info", "licenses", "images", "annotations", "categories"} <= raw.keys()
        (cat,) = raw["categories"]
        assert cat["id"] == 1 and cat["name"] == "person"
        assert cat["keypoints"] == list(COCO.joints)
        assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO.skeleton]
        assert len({a["id"] for a in raw["annotations"]}) == len(raw["annotations"])
        for img in api.dataset["images"]:
            pixels = cv2.imread(str(coco_dir / f"{split}2017" / img["file_name"]))
            assert pixels.shape == (img["height"], img["width"], 3)
        for ann in api.dataset["annotations"]:
            img = api.imgs[ann["image_id"]]
            kps = np.array(ann["keypoints"], float).reshape(17, 3)
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert set(kps[:, 2]) <= {0, 1, 2}
            assert (kps[kps[:, 2] == 0] == 0).all()
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert 0 < ann["area"] <= w * h


def test_small_persons_have_a_box_but_no_keypoints_as_in_coco(coco_dir):
    anns = json.loads((coco_dir / COCO_ANN.format("val")).read_text())["annotations"]
    small = [a for a in anns if a["area"] < MIN_KEYPOINT_AREA]
    large = [a for a in anns if a["area"] >= MIN_KEYPOINT_AREA]
    assert len(small) > 5 and len(large) > 5
    assert all(a["num_keypoints"] == 0 and not any(a["keypoints"]) for a in small)
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in small)
    assert sum(a["num_keypoints"] > 0 for a in large) > 0.9 * len(large)


def test_ground_truth_as_predictions_scores_ap_one(coco_dir):
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    gt = CocoApi(str(coco_dir / COCO_ANN.format("val")))
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in gt.dataset["annotations"]
        if a["num_keypoints"] > 0
    ]
    ev = COCOeval(gt, gt.loadRes(results), "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_visibility_follows_the_render(scenes):
    counts = {"v0": 0, "v1_other": 0, "v1_self": 0, "v2": 0}
    for scene in scenes:
        h, w = scene.labels.shape
        owner, part = scene.owner(), scene.part()
        for person in scene.people:
            if person.area < MIN_VISIBLE_AREA:
                continue
            for j, name in enumerate(COCO.joints):
                x, y, v = person.keypoints[j]
                rx, ry = person.points[name]
                inside = 0 <= rx <= w - 1 and 0 <= ry <= h - 1
                if v == 0:
                    assert not inside and (x, y) == (0, 0)
                    counts["v0"] += 1
                    continue
                assert inside and (x, y) == (rx, ry)
                ix, iy = round(x), round(y)
                own = owner[iy, ix] == person.index and part[iy, ix] in person.shows[name]
                assert own == (v == 2)
                assert set(person.shows[name]) <= set(JOINT_PARTS[name])
                if v == 2:
                    counts["v2"] += 1
                elif owner[iy, ix] > person.index:
                    counts["v1_other"] += 1
                else:
                    counts["v1_self"] += 1
    assert sum(len(s.people) for s in scenes) > 200
    assert min(counts.values()) > 20, counts


def test_annotated_box_is_the_visible_extent(scenes):
    for scene in scenes[:30]:
        owner = scene.owner()
        for person in scene.people:
            if person.area < MIN_VISIBLE_AREA:
                continue
            ys, xs = np.nonzero(owner == person.index)
            x, y, w, h = person.bbox
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            assert person.area == len(xs)


def test_left_and_right_limbs_look_different(scenes):
    """The figure's own left is redder than its right, whichever way it faces."""
    wins = total = 0
    for scene in scenes:
        img = scene.image.astype(float)
        for person in scene.people:
            kps = person.keypoints
            for joint in ("wrist", "knee"):
                a, b = COCO.joints.index(f"left_{joint}"), COCO.joints.index(f"right_{joint}")
                if kps[a, 2] != 2 or kps[b, 2] != 2:
                    continue
                red_minus_blue = []
                for j in (a, b):
                    x, y = np.round(kps[j, :2]).astype(int)
                    patch = img[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 3)
                    red_minus_blue.append(patch[:, 2].mean() - patch[:, 0].mean())
                wins += red_minus_blue[0] > red_minus_blue[1]
                total += 1
    assert total > 100
    assert wins / total > 0.9


def test_detections_cover_people_and_include_false_positives(coco_dir):
    gt = json.loads((coco_dir / COCO_ANN.format("val")).read_text())
    dets = json.loads((coco_dir / DETS).read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    by_image: dict[int, list] = {}
    for d in dets:
        assert d["category_id"] == 1 and 0 < d["score"] <= 1
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and x + w <= sizes[d["image_id"]][0] + 0.01
        by_image.setdefault(d["image_id"], []).append(d)
    people = [a for a in gt["annotations"] if a["area"] >= 400]
    best = [
        max((_iou(a["bbox"], d["bbox"]) for d in by_image.get(a["image_id"], [])), default=0.0)
        for a in people
    ]
    assert np.mean(np.array(best) > 0.5) > 0.85
    gt_boxes: dict[int, list] = {}
    for a in gt["annotations"]:
        gt_boxes.setdefault(a["image_id"], []).append(a["bbox"])
    false_pos = [
        d
        for d in dets
        if d["score"] < 0.3
        and max((_iou(d["bbox"], g) for g in gt_boxes.get(d["image_id"], [])), default=0.0) < 0.1
    ]
    assert len(false_pos) >= 10
    confident = [d for d in dets if d["score"] > 0.5]
    assert len(confident) <= 1.2 * len(gt["annotations"])


def test_mpii_layout_and_gt_mat(tmp_path):
    out = tmp_path / "mpii"
    summary = make_mpii_synth(out, num_train=4, num_val=10, seed=0)
    train = json.loads((out / "annotations/mpii_train.json").read_text())
    val = json.loads((out / "annotations/mpii_val.json").read_text())
    assert summary == {
        "train_images": 4,
        "train_persons": len(train),
        "val_images": 10,
        "val_persons": len(val),
    }
    for entry in train + val:
        assert set(entry) == {"image", "center", "scale", "joints", "joints_vis"}
        joints, vis = np.array(entry["joints"]), np.array(entry["joints_vis"])
        assert joints.shape == (MPII.num_joints, 2) and vis.shape == (MPII.num_joints,)
        assert (joints[vis == 0] == -1).all()
        h, w = cv2.imread(str(out / "images" / entry["image"])).shape[:2]
        seen = joints[vis == 1]
        assert ((seen >= 1) & (seen <= [w, h])).all()
        half = entry["scale"] * 200 / 2 + 1
        assert (np.abs(seen - entry["center"]) <= half).all()

    gt = scipy.io.loadmat(out / "annotations/mpii_gt_val.mat")
    n = len(val)
    assert gt["pos_gt_src"].shape == (16, 2, n)
    assert gt["jnt_missing"].shape == (16, n)
    assert gt["headboxes_src"].shape == (2, 2, n)
    np.testing.assert_allclose(
        gt["pos_gt_src"], np.array([e["joints"] for e in val]).transpose(1, 2, 0)
    )
    np.testing.assert_array_equal(gt["jnt_missing"], 1 - np.array([e["joints_vis"] for e in val]).T)

    # The HRNet evaluator's own steps: joints by name, predictions (N, 16, 2) transposed
    # to (16, 2, N) and subtracted directly, 0.6 x head diagonal; GT scores 100.
    names = gt["dataset_joints"]
    head = np.where(names == "head")[1][0]
    assert MPII.joints[head] == "head_top"
    boxes = gt["headboxes_src"]
    assert (boxes[1] > boxes[0]).all()
    top = gt["pos_gt_src"][head]
    ok = gt["jnt_missing"][head] == 0
    assert ((top[:, ok] >= boxes[0][:, ok] - 1) & (top[:, ok] <= boxes[1][:, ok] + 1)).all()
    headsize = np.linalg.norm(boxes[1] - boxes[0], axis=0) * 0.6
    preds = np.array([e["joints"] for e in val])
    pos_pred_src = np.transpose(preds, [1, 2, 0])
    err = np.linalg.norm(pos_pred_src - gt["pos_gt_src"], axis=1) / headsize
    visible = 1 - gt["jnt_missing"]
    assert ((err <= 0.5) * visible).sum() == visible.sum() > 0


def test_mpii_folder_passes_validation_and_loads_as_ground_truth(tmp_path):
    out = tmp_path / "mpii"
    make_mpii_synth(out, num_train=3, num_val=5, seed=1)
    assert validate_mpii(out) == []
    val = json.loads((out / "annotations/mpii_val.json").read_text())
    gt = load_mpii_gt(out / "annotations/mpii_gt_val.mat")
    np.testing.assert_allclose(gt.joints, np.array([e["joints"] for e in val]) - 1.0)
    np.testing.assert_array_equal(~gt.missing, np.array([e["joints_vis"] for e in val], bool))


def test_mpii_is_deterministic(tmp_path):
    make_mpii_synth(tmp_path / "a", 2, 3, seed=5)
    make_mpii_synth(tmp_path / "b", 2, 3, seed=5)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_refuses_a_non_empty_target_unless_overwrite(tmp_path):
    out = tmp_path / "coco"
    out.mkdir()
    make_coco_synth(out, 1, 1)
    (out / "marker").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_coco_synth(out, 1, 1)
    assert (out / "marker").read_text() == "old"
    make_coco_synth(out, 2, 1, overwrite=True)
    assert not (out / "marker").exists()
    assert len(list((out / "train2017").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_a_crash_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = coco_synth.write_jpeg

    def failing(path, image):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        real(path, image)

    out = tmp_path / "coco"
    monkeypatch.setattr(coco_synth, "write_jpeg", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_coco_synth(out, 5, 2)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(coco_synth, "write_jpeg", real)
    make_coco_synth(out, 1, 1)
    before = _files(out)
    calls["n"] = 0
    monkeypatch.setattr(mpii_synth, "write_jpeg", failing)
    with pytest.raises(RuntimeError):
        make_mpii_synth(out, 5, 2, overwrite=True)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_coco_summary_counts_what_was_written(tmp_path):
    summary = make_coco_synth(tmp_path / "coco", 4, 3, image_size=(160, 120), seed=2)
    counted = {}
    for split in ("train", "val"):
        raw = json.loads((tmp_path / "coco" / COCO_ANN.format(split)).read_text())
        assert len(list((tmp_path / "coco" / f"{split}2017").iterdir())) == len(raw["images"])
        counted[f"{split}_images"] = len(raw["images"])
        counted[f"{split}_persons"] = len(raw["annotations"])
        counted[f"{split}_persons_with_keypoints"] = sum(
            a["num_keypoints"] > 0 for a in raw["annotations"]
        )
    counted["val_detections"] = len(json.loads((tmp_path / "coco" / DETS).read_text()))
    assert summary == counted
    assert summary["train_images"] == 4 and summary["val_images"] == 3
