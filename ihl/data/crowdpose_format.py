"""CrowdPose files, read and checked: COCO-format files with 14 joints and no 'area'. No
tensors, so ``ihl prepare`` and ``ihl data`` load neither torch nor torchvision.

Layout as the reference trains and tests it: ``annotations/mmpose_crowdpose_<split>.json``
(``trainval`` to train, ``test`` to evaluate), images under ``images/``, and the detector
boxes ``annotations/det_for_crowd_test_0.1_0.5.json``. Every test image carries a
``crowdIndex``, by which the CrowdPose protocol splits AP into easy, medium and hard.
"""

from __future__ import annotations

from pathlib import Path

from .coco_format import ANNOTATION_KEYS as COCO_ANNOTATION_KEYS
from .coco_format import load_json, validate_coco
from .keypoints import CROWDPOSE

__all__ = [
    "ANNOTATION_KEYS",
    "DETECTIONS",
    "SPLITS",
    "crowd_index_problems",
    "crowdpose_split_paths",
    "validate_crowdpose",
]

SPLITS = {"train": "trainval", "val": "test"}
DETECTIONS = "annotations/det_for_crowd_test_0.1_0.5.json"
"""The reference's test boxes, relative to the dataset root."""

ANNOTATION_KEYS = tuple(k for k in COCO_ANNOTATION_KEYS if k != "area")


def crowdpose_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a CrowdPose split (trainval, test, ...)."""
    root = Path(root)
    return root / "annotations" / f"mmpose_crowdpose_{split}.json", root / "images"


def crowd_index_problems(ann_file: str | Path) -> list[str]:
    """Images of an evaluation file without a numeric crowdIndex (the protocol needs one)."""
    data = load_json(ann_file)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        return [f"{ann_file}: missing top-level list 'images'"]
    return [
        f"{ann_file}: image id {image.get('id')}: missing or non-numeric 'crowdIndex'"
        for image in images
        if not isinstance(image, dict)
        or not isinstance(image.get("crowdIndex"), int | float)
        or isinstance(image.get("crowdIndex"), bool)
    ]


def validate_crowdpose(root: str | Path, *, decode_images: bool = True) -> list[str]:
    """Scan a CrowdPose dataset in the layout above; every problem found (empty: all good)."""
    root = Path(root)
    problems: list[str] = []
    for split in SPLITS.values():
        ann_file, image_dir = crowdpose_split_paths(root, split)
        if not ann_file.is_file():
            problems.append(f"{ann_file}: file not found")
            continue
        detections = root / DETECTIONS if split == SPLITS["val"] else None
        problems += validate_coco(
            ann_file=ann_file,
            image_dir=image_dir,
            detections=detections if detections is not None and detections.is_file() else None,
            decode_images=decode_images,
            spec=CROWDPOSE,
            annotation_keys=ANNOTATION_KEYS,
        )
        if split == SPLITS["val"]:
            problems += crowd_index_problems(ann_file)
    return problems
