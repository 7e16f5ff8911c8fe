"""Detector output for a whole COCO-format split, and its box AP (pycocotools ``bbox``)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
from torch import nn

from ihl.config import DetectorConfig
from ihl.data.coco_format import coco_split_paths, load_json
from ihl.detection.detect import detect
from ihl.detection.models import PERSON
from ihl.distributed import Distributed, broadcast_from_main, gather_to_main, shard
from ihl.image_io import read_image_bgr

AP_SCORE_THRESHOLD = 0.05
"""AP ranks every box down to this score (the usual COCO practice), whatever the config keeps."""


BATCH = 8
"""Images per detector forward."""


def detect_images(
    model: nn.Module, cfg: DetectorConfig, image_dir: Path, images: list[dict]
) -> list[dict]:
    """COCO detection results (``image_id``, ``category_id`` 1, ``bbox`` x, y, w, h,
    ``score``) for the COCO ``images`` entries: the form of a COCO person detection file."""
    results = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        rgb = [
            cv2.cvtColor(read_image_bgr(image_dir / im["file_name"]), cv2.COLOR_BGR2RGB)
            for im in chunk
        ]
        for im, (boxes, scores) in zip(chunk, detect(model, rgb, cfg), strict=True):
            results += [
                {
                    "image_id": im["id"],
                    "category_id": PERSON,
                    "bbox": [round(float(v), 2) for v in box],
                    "score": round(float(score), 4),
                }
                for box, score in zip(boxes, scores, strict=True)
            ]
    return results


def box_ap(results: list[dict], annotation_file: str | Path) -> dict[str, float]:
    """pycocotools ``bbox`` metrics of person detections: AP, AP50, AP75, AR@100."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        if not results:
            return {"box_AP": 0.0, "box_AP50": 0.0, "box_AP75": 0.0, "box_AR": 0.0}
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.catIds = [PERSON]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(0.0, float(v)) for v in evaluator.stats]
    return {"box_AP": stats[0], "box_AP50": stats[1], "box_AP75": stats[2], "box_AR": stats[8]}


def evaluate_detector(
    model: nn.Module,
    cfg: DetectorConfig,
    root: str | Path,
    split: str = "val2017",
    ddp: Distributed | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Box AP of ``model`` on ``split`` and the detections it was computed from.

    Under torchrun (``ddp``) every rank detects one shard of the images (whole batches, so
    each forward is the one a single process runs) and every rank gets all detections and
    the AP that rank 0 computes from them.
    """
    ddp = ddp or Distributed()
    ranked = cfg.model_copy(
        update={"score_threshold": min(cfg.score_threshold, AP_SCORE_THRESHOLD)}
    )
    annotations, image_dir = coco_split_paths(root, split)
    images = load_json(annotations)["images"]
    mine = shard(len(images), ddp.rank, ddp.world_size, BATCH)
    found_here = detect_images(model, ranked, image_dir, images[mine.start : mine.stop])
    parts = gather_to_main(found_here, ddp)
    found = None
    if parts is not None:
        results = [result for part in parts for result in part]
        found = box_ap(results, annotations), results
    return broadcast_from_main(found, ddp)
