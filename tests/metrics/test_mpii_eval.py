import json
import math

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from ihl.data.errors import DatasetError
from ihl.data.keypoints import MPII
from ihl.metrics.mpii import evaluate_mpii_mat, evaluate_mpii_reference, pckh

J = {name: i for i, name in enumerate(MPII.joints)}
GROUP_KEYS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"]


def two_people():
    """Two people with head boxes of diagonal 10/0.6, so head size 10 and the
    PCKh@0.5 radius is 5 pixels (0.1 -> 1 pixel)."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (2, 16, 2))
    side = 10 / 0.6 / math.sqrt(2)
    boxes = np.array([[[0, 0], [side, side]], [[5, 5], [5 + side, 5 + side]]])
    return gt, boxes


def test_perfect_predictions():
    gt, boxes = two_people()
    metrics = pckh(gt, gt, np.ones((2, 16), bool), boxes)
    assert list(metrics) == [*GROUP_KEYS, "PCKh", "PCKh@0.1"]
    assert all(v == pytest.approx(100.0) for v in metrics.values())


def test_hand_made_errors():
    gt, boxes = two_people()
    pred = gt.copy()
    visible = np.ones((2, 16), bool)
    pred[0, J["l_wrist"], 0] += 6.0  # wrong at 0.5
    pred[1, J["l_wrist"], 1] += 5.0  # exactly on the radius: right
    pred[:, J["pelvis"]] += 50.0  # wrong, but pelvis is not scored
    pred[:, J["thorax"]] += 50.0  # likewise thorax
    pred[0, J["r_ankle"]] += 50.0  # wrong but invisible: ignored
    visible[0, J["r_ankle"]] = False
    pred[:, J["head_top"], 0] += 2.0  # right at 0.5, wrong at 0.1
    metrics = pckh(pred, gt, visible, boxes)

    assert metrics["Wrist"] == pytest.approx((50.0 + 100.0) / 2)
    assert metrics["Ankle"] == pytest.approx(100.0)
    assert metrics["Head"] == pytest.approx(100.0)
    # 14 scored joints, 27 visible instances of them; one miss.
    assert metrics["PCKh"] == pytest.approx(100.0 * 26 / 27)
    # At 0.1: the l_wrist pair and both head tops are wrong as well.
    assert metrics["PCKh@0.1"] == pytest.approx(100.0 * (27 - 4) / 27)


def test_head_sizes_accepted_directly():
    gt, _ = two_people()
    pred = gt + np.array([3.0, 0.0])
    metrics = pckh(pred, gt, np.ones((2, 16), bool), np.array([10.0, 5.0]))
    assert metrics["PCKh"] == pytest.approx(50.0)


def test_group_without_visible_joints_is_nan():
    gt, boxes = two_people()
    visible = np.ones((2, 16), bool)
    visible[:, [J["l_knee"], J["r_knee"]]] = False
    metrics = pckh(gt, gt, visible, boxes)
    assert math.isnan(metrics["Knee"])
    assert metrics["PCKh"] == pytest.approx(100.0)


def test_shape_mismatch():
    gt, boxes = two_people()
    with pytest.raises(ValueError, match="expected pred and gt"):
        pckh(gt[:, :15], gt, np.ones((2, 16), bool), boxes)


def _write_gt(path, gt, missing, boxes, layout=(1, 2, 0)):
    """gt (N, 16, 2) 1-based, missing (16, N), boxes (N, 2 corners, 2 coords)."""
    savemat(
        path,
        {
            "pos_gt_src": gt.transpose(layout),
            "jnt_missing": missing,
            "headboxes_src": boxes.transpose(1, 2, 0),
        },
    )


def _hrnet_pckh(preds, mat_path, threshold=0.5):
    """The HRNet reference's steps (lib/dataset/mpii.py evaluate), 0-based preds in."""
    mat = loadmat(mat_path)
    pos_pred_src = np.transpose(preds + 1.0, [1, 2, 0])
    jnt_visible = 1 - mat["jnt_missing"]
    uv_err = np.linalg.norm(pos_pred_src - mat["pos_gt_src"], axis=1)
    headsizes = mat["headboxes_src"][1, :, :] - mat["headboxes_src"][0, :, :]
    headsizes = np.linalg.norm(headsizes, axis=0) * 0.6
    scaled_uv_err = uv_err / (headsizes * np.ones((len(uv_err), 1)))
    less = (scaled_uv_err <= threshold) * jnt_visible
    pck = 100.0 * less.sum(1) / jnt_visible.sum(1)
    used = np.ones(16, bool)
    used[[J["pelvis"], J["thorax"]]] = False
    weights = jnt_visible.sum(1)[used]
    return {
        "PCKh": float(np.sum(pck[used] * weights) / weights.sum()),
        "Wrist": 0.5 * (pck[J["l_wrist"]] + pck[J["r_wrist"]]),
        "Head": pck[J["head_top"]],
    }


@pytest.mark.parametrize("n", [1, 3])
def test_mat_round_trip(tmp_path, n):
    rng = np.random.default_rng(n)
    gt = rng.uniform(1, 200, (n, 16, 2))  # 1-based, as in the official file
    missing = np.zeros((16, n))
    missing[0, 0] = 1
    boxes = np.stack([gt[:, 9] - 10, gt[:, 9] + 10], axis=1)
    path = tmp_path / "mpii_gt_val.mat"
    _write_gt(path, gt, missing, boxes)
    metrics = evaluate_mpii_mat(gt - 1.0, path)
    assert metrics["PCKh"] == pytest.approx(100.0)
    assert metrics["PCKh@0.1"] == pytest.approx(100.0)
    shifted = evaluate_mpii_mat(gt, path, threshold=0.0)
    assert shifted["PCKh"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="do not match"):
        evaluate_mpii_mat(gt[:, :, :1], path)


def test_mat_scores_match_the_hrnet_reference(tmp_path):
    rng = np.random.default_rng(4)
    n = 40
    gt = rng.uniform(1, 300, (n, 16, 2))
    missing = (rng.random((16, n)) < 0.1).astype(float)
    boxes = np.stack([gt[:, 9] - 12, gt[:, 9] + 12], axis=1)
    path = tmp_path / "mpii_gt_val.mat"
    _write_gt(path, gt, missing, boxes)
    pred = gt - 1.0 + rng.normal(0, 6, gt.shape)
    ours = evaluate_mpii_mat(pred, path)
    reference = _hrnet_pckh(pred, path)
    assert 20 < ours["PCKh"] < 95
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value)


def test_mat_in_the_wrong_layout_is_refused(tmp_path):
    gt = np.random.default_rng(0).uniform(1, 200, (3, 16, 2))
    path = tmp_path / "mpii_gt_val.mat"
    _write_gt(path, gt, np.zeros((16, 3)), gt[:, 8:10], layout=(2, 1, 0))
    with pytest.raises(DatasetError, match="pos_gt_src.*16 x 2 x N"):
        evaluate_mpii_mat(gt - 1.0, path)


def _write_json(path, joints, visible):
    """A val json of entries with 1-based ``joints`` (N, 16, 2) and ``joints_vis`` (N, 16)."""
    entries = [
        {"image": f"{i}.jpg", "center": [100.0, 100.0], "scale": 1.0,
         "joints": j.tolist(), "joints_vis": v.tolist()}
        for i, (j, v) in enumerate(zip(joints, visible, strict=True))
    ]  # fmt: skip
    path.write_text(json.dumps(entries))


def _mmpose_pckh(preds, joints, visible, head_sizes, threshold=0.5):
    """MMPose 1.x MpiiPCKAccuracy's steps (the IHL reference's MPII metric), 0-based preds in:
    1 added, errors over the head size on both axes, strictly below the threshold."""
    preds = preds + 1.0
    norm = np.tile(head_sizes[:, None], (1, 2))
    dist = np.linalg.norm((preds - joints) / norm[:, None, :], axis=-1)
    mask = visible > 0
    pck = np.array([100.0 * (dist[mask[:, k], k] < threshold).mean() for k in range(16)])
    count = mask.sum(0).astype(float)
    count[[J["pelvis"], J["thorax"]]] = 0
    return {
        "PCKh": float(np.sum(pck * count / count.sum())),
        "Wrist": 0.5 * (pck[J["l_wrist"]] + pck[J["r_wrist"]]),
        "Head": pck[J["head_top"]],
    }


def test_reference_scoring_is_mmposes(tmp_path):
    """The .mat and the json disagree here as the released files can: one joint moved and
    one visibility flag differ. The reference reads the json; ours reads the .mat."""
    rng = np.random.default_rng(7)
    n = 40
    joints = rng.uniform(1, 300, (n, 16, 2))
    visible = (rng.random((n, 16)) > 0.1).astype(float)
    boxes = np.stack([joints[:, 9] - 12, joints[:, 9] + 12], axis=1)
    mat_joints = joints.copy()
    mat_joints[0, J["l_wrist"]] += 40.0
    missing = 1.0 - visible.T
    missing[J["r_ankle"], 1] = 1.0 - missing[J["r_ankle"], 1]
    _write_gt(tmp_path / "mpii_gt_val.mat", mat_joints, missing, boxes)
    _write_json(tmp_path / "mpii_val.json", joints, visible)
    pred = joints - 1.0 + rng.normal(0, 6, joints.shape)

    reference = evaluate_mpii_reference(
        pred, tmp_path / "mpii_val.json", tmp_path / "mpii_gt_val.mat"
    )
    head_sizes = 0.6 * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)
    for key, value in _mmpose_pckh(pred, joints, visible, head_sizes).items():
        assert reference[key] == pytest.approx(value)
    assert reference["PCKh"] != pytest.approx(
        evaluate_mpii_mat(pred, tmp_path / "mpii_gt_val.mat")["PCKh"]
    )


def test_reference_scoring_counts_an_error_on_the_radius_as_a_miss(tmp_path):
    gt, boxes = two_people()  # head size 10: the radius is 5 pixels
    visible = np.ones((2, 16))
    _write_gt(tmp_path / "mpii_gt_val.mat", gt + 1.0, np.zeros((16, 2)), boxes + 1.0)
    _write_json(tmp_path / "mpii_val.json", gt + 1.0, visible)
    pred = gt.copy()
    pred[:, J["head_top"], 0] += 5.0
    ours = evaluate_mpii_mat(pred, tmp_path / "mpii_gt_val.mat")
    reference = evaluate_mpii_reference(
        pred, tmp_path / "mpii_val.json", tmp_path / "mpii_gt_val.mat"
    )
    assert (ours["Head"], reference["Head"]) == (100.0, 0.0)
