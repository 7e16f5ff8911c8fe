"""CrowdPose as a top-down dataset: ``CocoKeypoints`` with CrowdPose's 14 joints, its files
read and checked by ``ihl.data.crowdpose_format``.
"""

from __future__ import annotations

from pathlib import Path

from .coco import CocoKeypoints
from .crowdpose_format import ANNOTATION_KEYS
from .keypoints import CROWDPOSE

__all__ = ["CrowdPoseKeypoints"]


class CrowdPoseKeypoints(CocoKeypoints):
    """Person crops from a CrowdPose file; everything else as ``CocoKeypoints``. A person's
    area, which the files lack, is its box's w * h."""

    annotation_keys = ANNOTATION_KEYS

    def __init__(self, ann_file: str | Path, image_dir: str | Path, **kwargs) -> None:
        kwargs.setdefault("spec", CROWDPOSE)
        super().__init__(ann_file, image_dir, **kwargs)
