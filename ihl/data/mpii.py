"""MPII as a top-down dataset: one sample per annotated person.

The files are read and checked by ``ihl.data.mpii_format``; its coordinates are already
0-based there, so predictions mapped back with ``coords_to_image`` compare to its ground
truth directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import TopDownDataset
from .coco_format import load_json_list
from .errors import DatasetError
from .keypoints import MPII, KeypointSpec
from .mpii_format import parse_entry
from .transforms import Size, TopDownAugment, fix_aspect_ratio

__all__ = ["MpiiKeypoints", "mpii_center_scale"]


def mpii_center_scale(
    center: Any, scale: float, aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) pixel scale, 0-based, from an MPII annotation.

    MPII's ``scale`` is the person height / 200. The annotated box tends to
    cut limbs, so like the HRNet pose code we move the centre down by
    15 * scale pixels and pad the box by 1.25 (a square of 250 * scale px);
    it then grows to the input's aspect ratio.
    """
    center = np.asarray(center, dtype=np.float64).copy()
    center[1] += 15.0 * scale
    center -= 1.0
    side = 200.0 * scale * padding
    return center, fix_aspect_ratio(np.array([side, side]), aspect_ratio)


class MpiiKeypoints(TopDownDataset):
    """Person crops from an MPII json (HRNet format); samples as ``CocoKeypoints``.

    Boxes come from the annotation (centre, scale); 256x256 input and 64x64
    maps are the usual sizes. ``image_id`` is the entry's index in the file,
    which is the row of the same person in ``mpii_gt_val.mat`` for the
    validation split.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        train: bool = False,
        input_size: Size = (256, 256),
        heatmap_size: Size | None = None,
        sigma: float = 2.0,
        padding: float = 1.25,
        augment: bool | TopDownAugment = True,
        seed: int = 0,
        spec: KeypointSpec = MPII,
        decode: str = "cpu",
    ) -> None:
        super().__init__(
            ann_file, image_dir, train, input_size, heatmap_size, sigma, augment, seed, spec, decode
        )
        entries = load_json_list(self.ann_file, "entries")
        if not entries:
            raise DatasetError(f"{self.ann_file}: no entries: the split is empty")
        parsed = [parse_entry(e, i, self.ann_file, spec) for i, e in enumerate(entries)]
        aspect = self.pipeline.aspect_ratio
        boxes = [mpii_center_scale(c, s, aspect, padding) for c, s, _, _ in parsed]
        self.file_names = [str(e["image"]) for e in entries]
        self.centers = np.stack([b[0] for b in boxes])
        self.scales = np.stack([b[1] for b in boxes])
        self.joints = np.stack([p[2] for p in parsed])
        self.visible = np.stack([p[3] for p in parsed])
        self.image_ids = np.arange(len(entries), dtype=np.int64)
        self.box_scores = np.ones(len(entries))
        self.areas = np.prod(self.scales, axis=1)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.file_names[index]

    def _joints(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.joints[index], self.visible[index]

    def record(self, index: int) -> str:
        return f"entry #{index}"
