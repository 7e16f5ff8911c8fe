"""Person boxes of a COCO-format split, as torchvision's detection models train on them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ihl.data.coco_format import coco_split_paths, load_json
from ihl.detection.detect import to_tensor
from ihl.detection.models import PERSON
from ihl.image_io import read_image_bgr

MIN_SIDE = 2.0
"""Boxes narrower or lower than this many pixels are not trained on."""


class PersonBoxes(Dataset):
    """Images of one split with their non-crowd person boxes (x0, y0, x1, y1), label 1.

    ``split`` is the COCO folder name (``train2017``); ``flip`` mirrors a random half of the
    images: a person is a person either way round.
    """

    def __init__(self, root: str | Path, split: str, flip: bool = False, seed: int = 0):
        annotations, image_dir = coco_split_paths(root, split)
        coco = load_json(annotations)
        boxes: dict[int, list[list[float]]] = defaultdict(list)
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann.get("category_id", PERSON) == PERSON and not ann.get("iscrowd"):
                if w >= MIN_SIDE and h >= MIN_SIDE:
                    boxes[ann["image_id"]].append([x, y, x + w, y + h])
        self.items = [
            (image_dir / img["file_name"], img["id"], boxes.get(img["id"], []))
            for img in coco["images"]
        ]
        self.flip = flip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        path, image_id, boxes = self.items[index]
        image = cv2.cvtColor(read_image_bgr(path, f"image {image_id}"), cv2.COLOR_BGR2RGB)
        target = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if self.flip and self.rng.random() < 0.5:
            image = image[:, ::-1]
            target[:, [0, 2]] = image.shape[1] - target[:, [2, 0]]
        labels = torch.full((len(target),), PERSON, dtype=torch.int64)
        return to_tensor(image), {"boxes": target, "labels": labels}


def collate(batch):
    return tuple(zip(*batch, strict=True))
