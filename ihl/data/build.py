"""Datasets from a config: the training set, the validation set and an evaluation split.

Both stages build their data here, so train and evaluate crop, split and name files the
same way; ``worker_init`` is the loader set-up they share.
"""

from __future__ import annotations

from pathlib import Path

import cv2
from torch.utils.data import Dataset

from ihl.config import Config
from ihl.data.coco import CocoKeypoints
from ihl.data.coco_format import coco_split_paths
from ihl.data.crowdpose import CrowdPoseKeypoints
from ihl.data.crowdpose_format import SPLITS as CROWDPOSE_SPLITS
from ihl.data.crowdpose_format import crowdpose_split_paths
from ihl.data.errors import DatasetError
from ihl.data.keypoints import get_spec
from ihl.data.mpii import MpiiKeypoints
from ihl.data.transforms import TopDownAugment

COCO_SPLITS = {"train": "train2017", "val": "val2017"}
"""Short split names and the COCO 2017 folders they stand for; other names are used as given."""


def worker_init(_: int) -> None:
    """OpenCV's own thread pool in every loader worker oversubscribes the cores; turn it off."""
    cv2.setNumThreads(0)


def require_dir(path: Path, what: str) -> Path:
    """Fail early, naming the path, rather than on the first image read inside a loader."""
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} not found")
    return path


def needs_heatmaps(cfg: Config) -> bool:
    """Gaussian targets cost time in the loader; only the heatmap loss and the Wasserstein term
    read them."""
    if cfg.model.head == "heatmap":
        return True
    loss = cfg.loss
    return cfg.model.head == "ihl" and loss.wasserstein != "none" and loss.wasserstein_weight > 0


def build_train_dataset(cfg: Config) -> Dataset:
    """The augmented training split of ``cfg.data``, seeded by ``cfg.train.seed``."""
    root = require_dir(Path(cfg.data.root), "dataset folder")
    augment = TopDownAugment(
        get_spec(cfg.data.dataset),
        cfg.model.input_size,
        rotation_factor=cfg.data.rotation_factor,
        scale_range=cfg.data.scale_range,
        half_body_prob=cfg.data.half_body_prob,
        shift_prob=cfg.data.shift_prob,
        flip_prob=cfg.data.flip_prob,
    )
    kwargs = dict(
        train=True,
        augment=augment,
        input_size=cfg.model.input_size,
        heatmap_size=cfg.model.heatmap_size if needs_heatmaps(cfg) else None,
        sigma=cfg.loss.heatmap_sigma,
        seed=cfg.train.seed,
        decode=cfg.data.decode,
    )
    if cfg.data.dataset == "mpii":
        images = require_dir(root / "images", "image folder")
        return MpiiKeypoints(root / "annotations" / "mpii_train.json", images, **kwargs)
    if cfg.data.dataset == "crowdpose":
        ann_file, images = crowdpose_split_paths(root, CROWDPOSE_SPLITS["train"])
        return CrowdPoseKeypoints(ann_file, require_dir(images, "image folder"), **kwargs)
    ann_file, images = coco_split_paths(root, COCO_SPLITS["train"])
    return CocoKeypoints(ann_file, require_dir(images, "image folder"), **kwargs)


def build_val_dataset(cfg: Config) -> tuple[Dataset, Path]:
    """Validation crops as the reference validates: the detector boxes of ``data.detections``
    (COCO, CrowdPose), which must exist, as for ``ihl evaluate``; MPII's annotated boxes."""
    detections = Path(cfg.data.root) / cfg.data.detections
    if cfg.data.dataset != "mpii" and not detections.is_file():
        raise DatasetError(
            f"{detections}: detection results file not found; validation scores detector "
            "boxes, as the reference does: put the file there or point data.detections at it"
        )
    dataset, ground_truth = build_eval_dataset(cfg, split="val", boxes="detections")
    if not ground_truth.is_file():
        raise DatasetError(f"{ground_truth}: validation ground truth not found")
    return dataset, ground_truth


def build_eval_dataset(
    cfg: Config,
    data_root: str | Path | None = None,
    split: str = "val",
    boxes: str = "detections",
    *,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    detections: str | Path | None = None,
) -> tuple[Dataset, Path]:
    """The evaluation dataset of a split and its ground-truth file (COCO or CrowdPose json,
    MPII .mat). CrowdPose's train and val are its trainval and test files.

    COCO and CrowdPose crops come from the detector boxes (``boxes="detections"``) or the
    ground-truth boxes (``"gt"``); MPII always uses the annotated centre and
    scale. ``ann_file``, ``image_dir`` and ``detections`` override the standard
    layout under ``data_root`` (default ``cfg.data.root``).
    """
    if boxes not in ("detections", "gt"):
        raise ValueError(f"boxes must be 'detections' or 'gt', got {boxes!r}")
    root = Path(cfg.data.root if data_root is None else data_root)
    if ann_file is None or image_dir is None:
        require_dir(root, "dataset folder")
    if cfg.data.dataset == "mpii":
        ann = Path(ann_file or root / "annotations" / f"mpii_{split}.json")
        images = require_dir(Path(image_dir or root / "images"), "image folder")
        dataset = MpiiKeypoints(ann, images, input_size=cfg.model.input_size)
        return dataset, root / "annotations" / f"mpii_gt_{split}.mat"
    crowdpose = cfg.data.dataset == "crowdpose"
    if crowdpose:
        default_ann, default_images = crowdpose_split_paths(
            root, CROWDPOSE_SPLITS.get(split, split)
        )
    else:
        default_ann, default_images = coco_split_paths(root, COCO_SPLITS.get(split, split))
    ann = Path(ann_file or default_ann)
    images = require_dir(Path(image_dir or default_images), "image folder")
    dets = None
    if boxes == "detections":
        dets = Path(detections or root / cfg.data.detections)
        if not dets.is_file():
            raise DatasetError(f"{dets}: detection results file not found (or use boxes='gt')")
    reader = CrowdPoseKeypoints if crowdpose else CocoKeypoints
    dataset = reader(ann, images, input_size=cfg.model.input_size, detections=dets)
    return dataset, ann
