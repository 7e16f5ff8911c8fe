"""Evaluation protocols: COCO keypoint AP (pycocotools) and MPII PCKh.

COCO metrics are in pycocotools' 0-1 scale; MPII PCKh is in percent.
"""

from ihl.metrics.coco import (
    METRIC_KEYS,
    build_results,
    evaluate_coco,
    oks_nms,
    pairwise_oks,
    rescore,
    score_results_file,
    validate_results,
    write_metrics,
    write_results,
)
from ihl.metrics.mpii import evaluate_mpii_mat, pckh

__all__ = [
    "METRIC_KEYS",
    "build_results",
    "evaluate_coco",
    "evaluate_mpii_mat",
    "oks_nms",
    "pairwise_oks",
    "pckh",
    "rescore",
    "score_results_file",
    "validate_results",
    "write_metrics",
    "write_results",
]
