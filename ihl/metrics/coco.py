"""COCO keypoint evaluation: rescoring, OKS-NMS, results JSON and pycocotools AP.

Follows the top-down protocol of the HRNet reference: instance score = box score
x mean confident keypoint score, per-image OKS-NMS at 0.9, then COCOeval with
iouType "keypoints". Metrics stay in pycocotools' 0-1 scale.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from ihl.data.keypoints import COCO
from ihl.files import load_json, write_json

METRIC_KEYS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
"""Flat metric names, in the order of COCOeval.stats for keypoints."""

PREDICTION_KEYS = ("image_ids", "keypoints", "keypoint_scores", "box_scores", "box_areas")
RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")


def pairwise_oks(
    keypoints: np.ndarray, areas: np.ndarray, sigmas: Sequence[float] = COCO.sigmas
) -> np.ndarray:
    """OKS between every pair of instances, (N, N).

    Uses the mean area of the two instances as the scale, as the HRNet NMS does,
    so the similarity is symmetric (pycocotools uses the ground-truth area).
    """
    xy = np.asarray(keypoints, dtype=np.float64)[..., :2]
    areas = np.asarray(areas, dtype=np.float64)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    sq_dist = ((xy[:, None] - xy[None, :]) ** 2).sum(-1)
    scale = (areas[:, None] + areas[None, :]) / 2.0 + np.spacing(1)
    e = sq_dist / variances / scale[..., None] / 2.0
    return np.exp(-e).mean(-1)


def oks_nms(
    keypoints: np.ndarray,
    areas: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.9,
    sigmas: Sequence[float] = COCO.sigmas,
) -> np.ndarray:
    """Greedy OKS non-maximum suppression over one image's instances.

    keypoints (N, K, 2 or 3), areas (N,), scores (N,). An instance is dropped
    when its OKS with a higher-scored kept instance exceeds `threshold`.
    Returns the kept indices, highest score first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    oks = pairwise_oks(keypoints, areas, sigmas)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > threshold
    return np.asarray(keep, dtype=np.int64)


def rescore(
    keypoint_scores: np.ndarray, box_score: np.ndarray | float, threshold: float = 0.2
) -> np.ndarray | float:
    """Instance score = box score x mean of the keypoint scores above `threshold`.

    An instance with no keypoint above the threshold scores 0, as in the HRNet
    and MMPose code. keypoint_scores (..., K), box_score broadcastable to (...).
    """
    kpt = np.asarray(keypoint_scores, dtype=np.float64)
    confident = kpt > threshold
    count = confident.sum(-1)
    total = np.where(confident, kpt, 0.0).sum(-1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    out = np.asarray(box_score, dtype=np.float64) * mean
    return float(out) if out.ndim == 0 else out


def _check_predictions(predictions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [key for key in PREDICTION_KEYS if key not in predictions]
    if missing:
        raise KeyError(f"predictions lack {missing}; expected keys {list(PREDICTION_KEYS)}")
    arrays = {key: np.asarray(predictions[key]) for key in PREDICTION_KEYS}
    n = len(arrays["image_ids"])
    kpts = arrays["keypoints"]
    if kpts.ndim != 3 or kpts.shape[0] != n or kpts.shape[2] != 2:
        raise ValueError(f"keypoints must be (N, K, 2) with N={n}, got {kpts.shape}")
    if arrays["keypoint_scores"].shape != kpts.shape[:2]:
        raise ValueError(
            f"keypoint_scores must be {kpts.shape[:2]}, got {arrays['keypoint_scores'].shape}"
        )
    for key in ("box_scores", "box_areas"):
        if arrays[key].shape != (n,):
            raise ValueError(f"{key} must be ({n},), got {arrays[key].shape}")
    return arrays


def build_results(
    predictions: Mapping[str, Any],
    *,
    nms_threshold: float = 0.9,
    score_threshold: float = 0.2,
    sigmas: Sequence[float] = COCO.sigmas,
    category_id: int = 1,
) -> list[dict]:
    """Turn per-detection arrays into COCO keypoint results.

    `predictions` maps image_ids (N,), keypoints (N, K, 2) in original image
    pixels, keypoint_scores (N, K), box_scores (N,) and box_areas (N,) to
    arrays. Instances are rescored, then OKS-NMS runs within each image.
    """
    p = _check_predictions(predictions)
    scores = rescore(p["keypoint_scores"], p["box_scores"], score_threshold)
    triples = np.concatenate([p["keypoints"], p["keypoint_scores"][..., None]], axis=-1)
    results = []
    for image_id in np.unique(p["image_ids"]):
        idx = np.flatnonzero(p["image_ids"] == image_id)
        kept = oks_nms(p["keypoints"][idx], p["box_areas"][idx], scores[idx], nms_threshold, sigmas)
        for i in idx[kept]:
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_id,
                    "keypoints": [float(v) for v in triples[i].reshape(-1)],
                    "score": float(scores[i]),
                }
            )
    return results


def validate_results(
    results: Any, num_joints: int = COCO.num_joints, source: str = "results"
) -> None:
    """Raise ValueError naming the record index and key of the first bad record."""
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a JSON list of results, got {type(results).__name__}")
    for i, record in enumerate(results):
        where = f"{source}: record {i}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        for key in RESULT_KEYS:
            if key not in record:
                raise ValueError(f"{where}: missing key {key!r}")
        for key in ("image_id", "category_id"):
            if not isinstance(record[key], int) or isinstance(record[key], bool):
                raise ValueError(f"{where}: key {key!r} must be an integer, got {record[key]!r}")
        kpts = record["keypoints"]
        if not isinstance(kpts, list | tuple) or len(kpts) != 3 * num_joints:
            length = len(kpts) if isinstance(kpts, list | tuple) else type(kpts).__name__
            raise ValueError(
                f"{where}: key 'keypoints' must hold {3 * num_joints} numbers "
                f"([x, y, score] x {num_joints}), got {length}"
            )
        if not all(_is_finite_number(v) for v in kpts):
            raise ValueError(f"{where}: key 'keypoints' holds a non-numeric or non-finite value")
        if not _is_finite_number(record["score"]):
            raise ValueError(f"{where}: key 'score' must be a finite number")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def evaluate_coco(
    results: list[dict],
    ann_file: str | os.PathLike | CocoApi,
    *,
    verbose: bool = False,
    sigmas: Sequence[float] = COCO.sigmas,
) -> dict[str, float]:
    """Keypoint AP/AR of `results` against a COCO annotation file.

    pycocotools prints a great deal; it is captured unless `verbose`, which
    lets the summary table through. Empty results score 0 everywhere. A metric
    pycocotools cannot define (no ground truth in an area range, reported as -1)
    becomes NaN.
    """
    validate_results(results, num_joints=len(sigmas))
    if isinstance(ann_file, CocoApi):
        coco_gt = ann_file
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = CocoApi(str(ann_file))
    if not results:
        return dict.fromkeys(METRIC_KEYS, 0.0)
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise ValueError(
            f"{len(unknown)} result image id(s) are not in the annotation file: {shown}"
        )
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        key: float(value) if value >= 0 else math.nan
        for key, value in zip(METRIC_KEYS, evaluator.stats, strict=True)
    }


def score_results_file(
    results_json: str | os.PathLike, ann_file: str | os.PathLike | CocoApi, *, verbose: bool = False
) -> dict[str, float]:
    """Evaluate a results file written earlier (by us or in test-dev form)."""
    path = Path(results_json)
    results = load_json(path)
    validate_results(results, source=str(path))
    return evaluate_coco(results, ann_file, verbose=verbose)


def write_results(results: list[dict], path: str | os.PathLike) -> Path:
    """Write COCO keypoint results JSON atomically."""
    return write_json(path, results)


def write_metrics(metrics: Mapping[str, float], path: str | os.PathLike) -> Path:
    """Write flat metrics JSON atomically; undefined (NaN) metrics become null."""
    flat = {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}
    return write_json(path, flat)


def matched_fraction(
    ground_truth: Sequence[dict],
    keypoints: Sequence[np.ndarray],
    scores: Sequence[float],
    threshold: float = 0.5,
    sigmas: Sequence[float] = COCO.sigmas,
) -> float:
    """Share of the ground-truth persons with keypoints (COCO annotations of one image) that
    a distinct prediction matches with OKS above ``threshold``: predictions taken best
    score first, each to the free person it fits best (pycocotools' greedy rule and OKS:
    the person's area, its labelled keypoints only). NaN when nobody has keypoints."""
    people = [a for a in ground_truth if a.get("num_keypoints", 0) > 0]
    if not people:
        return float("nan")
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    free = set(range(len(people)))
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        xy = np.asarray(keypoints[i], dtype=np.float64)[:, :2]
        best, best_oks = None, threshold
        for j in free:
            gt = np.asarray(people[j]["keypoints"], dtype=np.float64).reshape(-1, 3)
            labelled = gt[:, 2] > 0
            e = ((xy - gt[:, :2]) ** 2).sum(-1) / variances / (people[j]["area"] + 1e-9) / 2
            oks = float(np.exp(-e[labelled]).mean())
            if oks > best_oks:
                best, best_oks = j, oks
        if best is not None:
            free.discard(best)
    return 1.0 - len(free) / len(people)
