"""MPII PCKh, two ways: the HRNet code's against mpii_gt_val.mat (``evaluate_mpii_mat``, what
``PCKh`` and the groups in our metrics are) and the IHL reference's, MMPose's
MpiiPCKAccuracy (``evaluate_mpii_reference``, reported beside them as ``reference_*``).

All values are percentages (0-100), the scale MPII tables report. Group scores
follow the HRNet code so numbers compare with published tables: "Head" is the
head_top joint alone and each limb group is the plain mean of its left and
right joints. The overall PCKh is the mean over visible joints (pelvis and
thorax left out), which makes upper_neck count only there. Both ways share this; they
differ in the ground truth (the .mat's joints and ``jnt_missing``, or the val json's
joints and ``joints_vis``) and at the radius (an error equal to it counts in HRNet's,
not in MMPose's).
"""

from __future__ import annotations

import os

import numpy as np

from ihl.data.keypoints import MPII
from ihl.data.mpii_format import load_mpii_gt, load_mpii_joints

SC_BIAS = 0.6
"""Head size = SC_BIAS x diagonal of the annotated head box."""

GROUPS = {
    "Head": ("head_top",),
    "Shoulder": ("l_shoulder", "r_shoulder"),
    "Elbow": ("l_elbow", "r_elbow"),
    "Wrist": ("l_wrist", "r_wrist"),
    "Hip": ("l_hip", "r_hip"),
    "Knee": ("l_knee", "r_knee"),
    "Ankle": ("l_ankle", "r_ankle"),
}
EXCLUDED = ("pelvis", "thorax")
"""Joints left out of the overall mean by the MPII protocol."""


def _head_sizes(head_boxes: np.ndarray) -> np.ndarray:
    head_boxes = np.asarray(head_boxes, dtype=np.float64)
    if head_boxes.ndim == 1:
        return head_boxes
    if head_boxes.shape[1:] != (2, 2):
        raise ValueError(f"head_boxes must be (N, 2, 2) or (N,), got {head_boxes.shape}")
    return SC_BIAS * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=-1)


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    head_boxes: np.ndarray,
    threshold: float = 0.5,
    *,
    strict: bool = False,
) -> dict[str, float]:
    """PCKh per joint group, overall (`PCKh`) and at 0.1 (`PCKh@0.1`), in percent.

    pred, gt (N, 16, 2) in the same pixel frame; visible (N, 16) bool;
    head_boxes (N, 2, 2) as [[x1, y1], [x2, y2]], or (N,) head sizes used as
    the normaliser directly. A joint is correct when its error is at most
    threshold x head size (below it, with ``strict``). Only visible joints count; a
    group or mean with no visible joint is NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    shape = (len(gt), MPII.num_joints, 2)
    if gt.shape != shape or pred.shape != shape or visible.shape != shape[:2]:
        raise ValueError(
            f"expected pred and gt {shape} and visible {shape[:2]}, "
            f"got {pred.shape}, {gt.shape}, {visible.shape}"
        )
    sizes = _head_sizes(head_boxes)
    if sizes.shape != (len(gt),):
        raise ValueError(f"need one head box or size per person ({len(gt)}), got {sizes.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_err = np.linalg.norm(pred - gt, axis=-1) / sizes[:, None]
    counts = visible.sum(0)

    def per_joint(thr: float) -> np.ndarray:
        inside = scaled_err < thr if strict else scaled_err <= thr
        hits = (visible & inside).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * hits / counts

    def mean(per: np.ndarray) -> float:
        used = np.array([j not in EXCLUDED for j in MPII.joints]) & (counts > 0)
        if not used.any():
            return float("nan")
        return float(np.sum(per[used] * counts[used]) / counts[used].sum())

    def group(per: np.ndarray, joints: tuple[str, ...]) -> float:
        vals = [per[MPII.joints.index(j)] for j in joints]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    at_thr = per_joint(threshold)
    metrics = {name: group(at_thr, joints) for name, joints in GROUPS.items()}
    metrics["PCKh"] = mean(at_thr)
    metrics["PCKh@0.1"] = mean(per_joint(0.1))
    return metrics


def evaluate_mpii_mat(
    pred: np.ndarray, gt_mat_path: str | os.PathLike, threshold: float = 0.5
) -> dict[str, float]:
    """PCKh of 0-based pixel predictions (N, 16, 2) against mpii_gt_val.mat.

    The file is read by ``load_mpii_gt``, the one reader of its format, which
    converts its 1-based MATLAB coordinates to 0-based pixels; errors and head
    sizes are differences, so they equal the HRNet code's (which adds 1 to the
    predictions instead). Rows of `pred` must follow the order of the file's people.
    """
    gt = load_mpii_gt(gt_mat_path)
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != gt.joints.shape:
        raise ValueError(f"predictions {pred.shape} do not match {gt_mat_path} {gt.joints.shape}")
    return pckh(pred, gt.joints, ~gt.missing, gt.head_boxes, threshold)


def evaluate_mpii_reference(
    pred: np.ndarray,
    val_json: str | os.PathLike,
    gt_mat: str | os.PathLike,
    threshold: float = 0.5,
) -> dict[str, float]:
    """PCKh of 0-based pixel predictions (N, 16, 2) as the IHL reference scores MPII (MMPose's
    MpiiPCKAccuracy): against the joints and ``joints_vis`` of the val json, 1-based as stored,
    with 1 added to the predictions, head sizes from the .mat, and a joint correct only when
    its error is below the radius."""
    joints, visible = load_mpii_joints(val_json)
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != joints.shape:
        raise ValueError(f"predictions {pred.shape} do not match {val_json} {joints.shape}")
    sizes = load_mpii_gt(gt_mat).head_sizes
    if len(sizes) != len(joints):
        raise ValueError(f"{gt_mat} has {len(sizes)} head boxes for {len(joints)} people")
    return pckh(pred + 1.0, joints, visible > 0, sizes, threshold, strict=True)
