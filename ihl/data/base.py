"""What a top-down dataset does whatever its annotation format.

COCO and MPII differ only in how they read their annotations and turn a
person into a crop centre and scale; the rest (augmenter choice, seeding,
the pipeline, assembling a sample) lives here once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ihl.image_io import read_image_bgr

from .keypoints import KeypointSpec
from .transforms import Size, TopDownAugment, TopDownPipeline, sample_rng


class TopDownDataset(torch.utils.data.Dataset):
    """Person crops, one sample per row of the arrays a subclass fills in.

    A subclass parses its annotations and sets, one row per person,
    ``centers`` and ``scales`` (N, 2) in image pixels, ``image_ids``,
    ``box_scores`` and ``areas`` (N,); it implements ``image_path``,
    ``_joints`` (the person's joints (K, 2) in image pixels and their
    visibility (K,)) and ``_record`` (how errors name the person).

    ``augment``: True for the default recipe, False for none, or a
    ``TopDownAugment``; only used when ``train``. Augmentation is seeded by
    (``seed``, epoch, index): call ``set_epoch`` before each epoch.
    """

    centers: np.ndarray
    scales: np.ndarray
    image_ids: np.ndarray
    box_scores: np.ndarray
    areas: np.ndarray

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        train: bool,
        input_size: Size,
        heatmap_size: Size | None,
        sigma: float,
        augment: bool | TopDownAugment,
        seed: int,
        spec: KeypointSpec,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.train = train
        self.spec = spec
        self.seed = seed
        self.epoch = 0
        if not train or augment is False:
            augmenter = None
        elif augment is True:
            augmenter = TopDownAugment(spec, input_size)
        else:
            augmenter = augment
        self.pipeline = TopDownPipeline(spec, input_size, heatmap_size, sigma, augmenter)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image_path(self, index: int) -> Path:
        raise NotImplementedError

    def _joints(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _record(self, index: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        image = read_image_bgr(self.image_path(index), self._record(index))
        joints, visible = self._joints(index)
        rng = sample_rng(self.seed, self.epoch, index) if self.pipeline.augment else None
        sample = self.pipeline(image, self.centers[index], self.scales[index], joints, visible, rng)
        sample["image_id"] = int(self.image_ids[index])
        sample["box_score"] = float(self.box_scores[index])
        sample["area"] = float(self.areas[index])
        return sample
