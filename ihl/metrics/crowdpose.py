"""CrowdPose evaluation as the reference configures it.

Instance score = box score + mean + max of the keypoint scores (MMPose's "bbox_rle" mode),
per-image OKS-NMS at 0.9 with the CrowdPose sigmas, then xtcocotools' ``keypoints_crowd``
protocol: OKS scaled by 0.53 x the ground-truth box area (the files have no 'area'), up to
20 detections per image, no area ranges, and AP split by each image's crowdIndex into easy
(< 0.2), medium and hard (> 0.8). Metrics stay in the 0-1 scale.

The reference logs these nine numbers under COCO's ten names (its AP (M) is an AR); here
each keeps the name of what it is.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ihl.data.keypoints import CROWDPOSE
from ihl.metrics.coco import PREDICTION_KEYS, oks_nms, validate_results

METRIC_KEYS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")
"""Flat metric names, in the order of xtcocotools' keypoints_crowd stats."""


def rescore_bbox_rle(keypoint_scores: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
    """Box score + mean + max keypoint score, per instance (keypoint_scores (N, K))."""
    kpt = np.asarray(keypoint_scores, dtype=np.float64)
    return np.asarray(box_scores, dtype=np.float64) + kpt.mean(-1) + kpt.max(-1)


def build_crowdpose_results(
    predictions: Mapping[str, Any], *, nms_threshold: float = 0.9
) -> list[dict]:
    """Per-detection arrays (the keys of ``ihl.metrics.coco.build_results``, 14 joints)
    to CrowdPose results: rescored as above, OKS-NMS within each image."""
    missing = [key for key in PREDICTION_KEYS if key not in predictions]
    if missing:
        raise KeyError(f"predictions lack {missing}; expected keys {list(PREDICTION_KEYS)}")
    p = {key: np.asarray(predictions[key]) for key in PREDICTION_KEYS}
    if p["keypoints"].ndim != 3 or p["keypoints"].shape[1:] != (CROWDPOSE.num_joints, 2):
        raise ValueError(f"keypoints must be (N, 14, 2), got {p['keypoints'].shape}")
    if len(p["image_ids"]) == 0:
        return []
    scores = rescore_bbox_rle(p["keypoint_scores"], p["box_scores"])
    triples = np.concatenate([p["keypoints"], p["keypoint_scores"][..., None]], axis=-1)
    results = []
    for image_id in np.unique(p["image_ids"]):
        idx = np.flatnonzero(p["image_ids"] == image_id)
        kept = oks_nms(
            p["keypoints"][idx], p["box_areas"][idx], scores[idx], nms_threshold, CROWDPOSE.sigmas
        )
        results += [
            {
                "image_id": int(image_id),
                "category_id": 1,
                "keypoints": [float(v) for v in triples[i].reshape(-1)],
                "score": float(scores[i]),
            }
            for i in idx[kept]
        ]
    return results


def evaluate_crowdpose(
    results: list[dict], ann_file: str | os.PathLike, *, verbose: bool = False
) -> dict[str, float]:
    """The nine CrowdPose metrics of ``results`` against a CrowdPose annotation file.

    xtcocotools rereads the file for the crowdIndex split, so it takes a path. Empty results
    score 0 everywhere; an undefined metric (-1 from xtcocotools) becomes NaN.
    """
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    from ihl.data.crowdpose_format import crowd_index_problems

    validate_results(results, num_joints=CROWDPOSE.num_joints)
    problems = crowd_index_problems(ann_file)
    if problems:
        raise ValueError(f"{len(problems)} image(s) cannot be split by crowding: {problems[0]}")
    if not results:
        return dict.fromkeys(METRIC_KEYS, 0.0)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_gt = COCO(os.fspath(ann_file))
        unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
        if unknown:
            raise ValueError(
                f"{len(unknown)} result image id(s) are not in {ann_file}: "
                + ", ".join(map(str, unknown[:10]))
            )
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        sigmas = np.asarray(CROWDPOSE.sigmas, dtype=np.float64)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints_crowd", sigmas, use_area=False)
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        key: float(value) if value >= 0 else math.nan
        for key, value in zip(METRIC_KEYS, evaluator.stats, strict=True)
    }
