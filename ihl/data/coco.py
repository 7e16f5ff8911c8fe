"""COCO keypoints as a top-down dataset: one sample per person box.

The files are read and checked by ``ihl.data.coco_format`` (layout, keys, boxes) when the
dataset is built; images when a sample is loaded; every failure is a ``DatasetError``
naming the file, the record and the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import TopDownDataset
from .coco_format import (
    ANNOTATION_KEYS,
    load_annotations,
    load_json_list,
    parse_annotation,
    parse_detection,
    person_category,
)
from .errors import DatasetError
from .keypoints import COCO, KeypointSpec
from .transforms import (
    Size,
    TopDownAugment,
    box_center_size,
    coords_to_image,
)

__all__ = ["CocoKeypoints", "DatasetError", "coords_to_image"]


class CocoKeypoints(TopDownDataset):
    """Person crops from a COCO keypoint file, for training or evaluation.

    Train: one sample per non-crowd annotation with keypoints, ground-truth
    box (clipped to the image), augmented. Eval: the same ground-truth boxes,
    or, with ``detections``, the person boxes of a COCO detection-results
    file (bad ones are skipped and counted in ``num_bad_boxes``).

    Samples are dicts: ``image`` (3, H, W) uint8 RGB, ``coords`` (K, 2),
    ``weights`` (K,), ``heatmap_x`` (K, w) and ``heatmap_y`` (K, h) (the factors
    of the Gaussian maps) when ``heatmap_size`` is set,
    and ``center``, ``scale``, ``rotation``, ``flipped`` (the crop geometry,
    for ``coords_to_image``), ``image_id``, ``box_score`` (1 for ground
    truth) and ``area`` (annotation area, or w * h of a detection box).
    Detection samples have no ground truth: zero coords and weights.

    ``augment``, ``seed``, ``decode`` and ``set_epoch`` as in ``TopDownDataset``.
    """

    annotation_keys = ANNOTATION_KEYS
    """Keys every annotation must have; a file without 'area' takes the box's w * h."""

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        train: bool = False,
        input_size: Size = (192, 256),
        heatmap_size: Size | None = None,
        sigma: float = 2.0,
        detections: str | Path | None = None,
        min_box_score: float = 0.0,
        padding: float = 1.25,
        augment: bool | TopDownAugment = True,
        seed: int = 0,
        spec: KeypointSpec = COCO,
        decode: str = "cpu",
    ) -> None:
        if train and detections is not None:
            raise ValueError("training uses ground-truth boxes; detections are for evaluation")
        super().__init__(
            ann_file, image_dir, train, input_size, heatmap_size, sigma, augment, seed, spec, decode
        )
        self.num_bad_boxes = 0
        data, images = load_annotations(self.ann_file, image_info=detections is not None)
        self._file_names = {image_id: str(image["file_name"]) for image_id, image in images.items()}
        if detections is None:
            self._load_ground_truth(data, images)
        else:
            self._load_detections(
                Path(detections), images, person_category(data, self.ann_file), min_box_score
            )
        if len(self) == 0:
            source = self.ann_file if detections is None else detections
            raise DatasetError(f"{source}: no usable person boxes: the split is empty")
        centers, scales = zip(*(box_center_size(b, padding) for b in self.boxes), strict=True)
        self.centers, self.scales = np.stack(centers), np.stack(scales)

    def _load_ground_truth(self, data: dict, images: dict[int, dict]) -> None:
        category = person_category(data, self.ann_file)
        image_ids, ann_ids, boxes, keypoints, areas = [], [], [], [], []
        for index, ann in enumerate(data["annotations"]):
            if isinstance(ann, dict) and ann.get("category_id", category) != category:
                continue
            parsed = parse_annotation(
                ann, index, self.ann_file, images, self.spec, self.annotation_keys
            )
            if parsed is None:
                continue
            box = parsed[0]
            image_ids.append(int(ann["image_id"]))
            ann_ids.append(int(ann["id"]))
            boxes.append(box)
            keypoints.append(parsed[1])
            areas.append(float(ann["area"]) if "area" in ann else float(box[2] * box[3]))
        k = self.spec.num_joints
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self.ann_ids = np.asarray(ann_ids, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, k, 3)
        self.areas = np.asarray(areas, dtype=np.float64)
        self.box_scores = np.ones(len(self.image_ids))

    def _load_detections(
        self, path: Path, images: dict[int, dict], category: int, min_score: float
    ) -> None:
        records = load_json_list(path, "detections")
        image_ids, boxes, scores = [], [], []
        for index, det in enumerate(records):
            try:
                parsed = parse_detection(det, index, images, category)
            except DatasetError:
                self.num_bad_boxes += 1
                continue
            if parsed is None or parsed[2] < min_score:
                continue
            image_ids.append(parsed[0])
            boxes.append(parsed[1])
            scores.append(parsed[2])
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self.ann_ids = np.full(len(image_ids), -1, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.keypoints = np.zeros((len(image_ids), self.spec.num_joints, 3))
        self.areas = self.boxes[:, 2] * self.boxes[:, 3]
        self.box_scores = np.asarray(scores, dtype=np.float64)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._file_names[int(self.image_ids[index])]

    def _joints(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        keypoints = self.keypoints[index]
        return keypoints[:, :2], keypoints[:, 2]

    def record(self, index: int) -> str:
        if self.ann_ids[index] >= 0:
            return f"annotation id {self.ann_ids[index]}"
        return f"detection sample {index}"
