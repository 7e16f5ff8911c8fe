"""What a top-down dataset does whatever its annotation format.

COCO and MPII differ only in how they read their annotations and turn a
person into a crop centre and scale; the rest (augmenter choice, seeding,
the pipeline, assembling a sample) lives here once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ihl.image_io import describe, read_image_bgr, read_image_file

from .device_decode import encoded_sample
from .keypoints import KeypointSpec
from .transforms import Size, TopDownAugment, TopDownPipeline, sample_rng


class TopDownDataset(torch.utils.data.Dataset):
    """Person crops, one sample per row of the arrays a subclass fills in.

    A subclass parses its annotations and sets, one row per person,
    ``centers`` and ``scales`` (N, 2) in image pixels (any aspect ratio: the pipeline grows
    the crop to the input's), ``image_ids``,
    ``box_scores`` and ``areas`` (N,); it implements ``image_path``,
    ``_joints`` (the person's joints (K, 2) in image pixels and their
    visibility (K,)) and ``record`` (how errors name the person).

    ``augment``: True for the default recipe, False for none, or a
    ``TopDownAugment``; only used when ``train``. Augmentation is seeded by
    (``seed``, epoch, index): call ``set_epoch`` before each epoch.

    ``decode``: "cpu" decodes and warps each image here; "device" leaves both to the
    training process and ships the encoded file instead of ``image`` (``device_decode``).
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
        decode: str = "cpu",
    ) -> None:
        if decode not in ("cpu", "device"):
            raise ValueError(f"decode must be 'cpu' or 'device', got {decode!r}")
        self.decode = decode
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

    def record(self, index: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Sample ``index`` as augmented in the ``set_epoch`` epoch, or in ``epoch`` when given
        ``(epoch, index)``: a sampler that yields pairs lets persistent loader workers, which
        never see a later ``set_epoch``, augment for the right epoch."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        path, record = self.image_path(index), self.record(index)
        joints, visible = self._joints(index)
        rng = sample_rng(self.seed, epoch, index) if self.pipeline.augment else None
        person = (self.centers[index], self.scales[index], joints, visible, rng)
        if self.decode == "device":
            data = read_image_file(path, record)
            sample, matrix = self.pipeline.geometry(*person)
            sample = encoded_sample(data, sample, matrix, describe(path, record))
        else:
            sample = self.pipeline(read_image_bgr(path, record), *person)
        sample["image_id"] = int(self.image_ids[index])
        sample["box_score"] = float(self.box_scores[index])
        sample["area"] = float(self.areas[index])
        return sample
