"""COCO keypoint files, read and checked: no tensors, so ``ihl prepare`` and ``ihl data``
load neither torch nor torchvision.

Layout (ihl-method.md section 8): ``annotations/person_keypoints_<split>.json``
with images under ``<split>/`` (the vendored samples in data/samples use ``images/``)
and detector boxes in ``person_detection_results/*.json``. Every failure is a
``DatasetError`` naming the file, the record and the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ihl import files
from ihl.boxes import BoxError, parse_box
from ihl.image_io import image_problem

from .errors import DatasetError
from .keypoints import COCO, KeypointSpec

_IMAGE_KEYS = ("id", "file_name")
ANNOTATION_KEYS = (
    "id",
    "image_id",
    "category_id",
    "bbox",
    "keypoints",
    "num_keypoints",
    "iscrowd",
    "area",
)
_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def load_json(path: str | Path) -> Any:
    """Read a JSON file, turning every way it can fail into a DatasetError."""
    return files.load_json(path, DatasetError)


def load_json_list(path: str | Path, what: str) -> list:
    """A JSON file that must hold a list (of ``what``, for the error), or a DatasetError."""
    records = load_json(path)
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON list of {what}")
    return records


def coco_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a split in the standard COCO layout."""
    root = Path(root)
    image_dir = root / split
    if not image_dir.is_dir() and (root / "images").is_dir():
        image_dir = root / "images"
    return root / "annotations" / f"person_keypoints_{split}.json", image_dir


def _require(record: dict, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise DatasetError(f"{where}: missing key {key!r}")


def _box(value: Any, where: str) -> np.ndarray:
    """A finite (x, y, w, h) box with positive size, or a DatasetError."""
    try:
        box, _ = parse_box(value, scored=False)
    except BoxError as err:
        raise DatasetError(f"{where}: key 'bbox' {err}") from None
    return np.asarray(box, dtype=np.float64)


def person_category(data: dict, path: Path) -> int:
    categories = data.get("categories")
    for category in categories if isinstance(categories, list) else []:
        if isinstance(category, dict) and category.get("name") == "person" and "id" in category:
            return int(category["id"])
    return 1


def load_annotations(path: Path, image_info: bool = False) -> tuple[dict, dict[int, dict]]:
    """A COCO keypoint file and its images by id, checked at the top level. With
    ``image_info`` the file may be an image-info file (test-dev: images, no annotations)."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return data, _images(data, path, ("images",) if image_info else ("images", "annotations"))


def is_image_info(path: str | Path) -> bool:
    """Whether a COCO file lists images without annotations (test-dev's image-info files)."""
    data = load_json(path)
    return isinstance(data, dict) and "images" in data and "annotations" not in data


def _images(data: dict, path: Path, required: tuple[str, ...]) -> dict[int, dict]:
    for key in required:
        if key not in data:
            raise DatasetError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: top-level key {key!r} must be a list")
    images = {}
    for index, image in enumerate(data["images"]):
        _require(image, _IMAGE_KEYS, f"{path}: image #{index}")
        images[int(image["id"])] = image
    return images


def parse_annotation(
    ann: dict,
    index: int,
    path: Path,
    images: dict[int, dict],
    spec: KeypointSpec,
    keys: tuple[str, ...] = ANNOTATION_KEYS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(box clipped to the image, keypoints (K, 3)) of a usable person, else None.

    None means "not a sample" (crowd, no keypoints); malformed records raise.
    """
    where = f"{path}: annotation #{index}"
    if isinstance(ann, dict) and "id" in ann:
        where = f"{path}: annotation id {ann['id']}"
    _require(ann, keys, where)
    if int(ann["image_id"]) not in images:
        raise DatasetError(f"{where}: key 'image_id' {ann['image_id']} is not in 'images'")
    try:
        keypoints = np.asarray(ann["keypoints"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: key 'keypoints' is not a list of numbers") from None
    if keypoints.shape != (3 * spec.num_joints,):
        raise DatasetError(
            f"{where}: key 'keypoints' must have {3 * spec.num_joints} numbers "
            f"({spec.num_joints} joints x 3), got {keypoints.size}"
        )
    if ann["iscrowd"] or ann["num_keypoints"] <= 0:
        return None
    box = _box(ann["bbox"], where)
    image = images[int(ann["image_id"])]
    if "width" in image and "height" in image:
        x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
        x1 = min(box[0] + box[2], float(image["width"]))
        y1 = min(box[1] + box[3], float(image["height"]))
        if x1 <= x0 or y1 <= y0:
            raise DatasetError(f"{where}: key 'bbox' lies outside its image: {ann['bbox']}")
        box = np.array([x0, y0, x1 - x0, y1 - y0])
    return box, keypoints.reshape(spec.num_joints, 3)


def parse_detection(det: Any, index: int, images: dict[int, dict] | None, category: int):
    """(image id, box, score) of a usable person detection; None for another class.

    Raises DatasetError for a bad box (the caller counts and skips those) so
    the reason is at hand for ``validate_coco``.
    """
    where = f"detection #{index}"
    _require(det, _DETECTION_KEYS, where)
    if int(det["category_id"]) != category:
        return None
    box = _box(det["bbox"], where)
    score = float(det["score"])
    if not math.isfinite(score):
        raise DatasetError(f"{where}: key 'score' is not finite")
    if images is not None and int(det["image_id"]) not in images:
        raise DatasetError(f"{where}: key 'image_id' {det['image_id']} is not in the annotations")
    return int(det["image_id"]), box, score


def _discover(root: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    pairs = []
    for ann_file in sorted((root / "annotations").glob("person_keypoints_*.json")):
        split = ann_file.stem.removeprefix("person_keypoints_")
        pairs.append(coco_split_paths(root, split))
    detections = sorted((root / "person_detection_results").glob("*.json"))
    return pairs, detections


def validate_coco(
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    detections: str | Path | None = None,
    decode_images: bool = True,
    spec: KeypointSpec = COCO,
    annotation_keys: tuple[str, ...] = ANNOTATION_KEYS,
) -> list[str]:
    """Scan a COCO keypoint dataset and list every problem found (empty: all good).

    Give a ``root`` in the standard layout, or ``ann_file`` and ``image_dir``
    (and optionally ``detections``). Every image listed is checked to exist
    and, with ``decode_images``, to decode completely.
    """
    if root is not None:
        pairs, detection_files = _discover(Path(root))
        if not pairs:
            return [f"{Path(root) / 'annotations'}: no person_keypoints_*.json files found"]
    elif ann_file is not None and image_dir is not None:
        pairs, detection_files = [(Path(ann_file), Path(image_dir))], []
    else:
        raise ValueError("give a dataset root, or both ann_file and image_dir")
    if detections is not None:
        detection_files.append(Path(detections))

    problems: list[str] = []
    all_images: dict[int, dict] = {}
    category = 1
    for ann_path, img_dir in pairs:
        try:
            data, images = load_annotations(ann_path)
        except DatasetError as err:
            problems.append(str(err))
            continue
        all_images.update(images)
        category = person_category(data, ann_path)
        samples = 0
        for index, ann in enumerate(data["annotations"]):
            if isinstance(ann, dict) and ann.get("category_id", category) != category:
                continue
            try:
                parsed = parse_annotation(ann, index, ann_path, images, spec, annotation_keys)
                samples += parsed is not None
            except DatasetError as err:
                problems.append(str(err))
        if samples == 0:
            problems.append(f"{ann_path}: no usable person annotations: the split is empty")
        if not img_dir.is_dir():
            problems.append(f"{img_dir}: image folder not found")
            continue
        for image in images.values():
            path = img_dir / str(image["file_name"])
            problem = image_problem(path, f"image id {image['id']}", decode_images)
            if problem is not None:
                problems.append(problem)

    for det_path in detection_files:
        try:
            records = load_json_list(det_path, "detections")
        except DatasetError as err:
            problems.append(str(err))
            continue
        for index, det in enumerate(records):
            try:
                parse_detection(det, index, all_images or None, category)
            except DatasetError as err:
                problems.append(f"{det_path}: {err}")
    return problems
