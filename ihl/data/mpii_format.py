"""MPII files, read and checked: the split jsons (HRNet's format: entries {image, center,
scale, joints, joints_vis}) and the ground truth PCKh reads (``mpii_gt_val.mat``). No tensors,
so ``ihl prepare`` and ``ihl data`` load neither torch nor torchvision.

Layout (ihl-method.md section 8): ``annotations/mpii_<split>.json``, images in ``images/``,
and ``annotations/mpii_gt_val.mat``. MPII coordinates are 1-based (Matlab); what is read here
is converted to the 0-based pixels of the rest of the pipeline, the ``.mat`` ground truth
included, so predictions mapped back with ``coords_to_image`` compare to it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from ihl.image_io import image_problem

from .coco_format import load_json_list
from .errors import DatasetError
from .keypoints import MPII, KeypointSpec

__all__ = [
    "MpiiGroundTruth",
    "load_mpii_gt",
    "load_mpii_joints",
    "parse_entry",
    "split_json",
    "validate_mpii",
]

_ENTRY_KEYS = ("image", "center", "scale", "joints", "joints_vis")
_GT_KEYS = ("pos_gt_src", "jnt_missing", "headboxes_src")


def parse_entry(entry: Any, index: int, path: Path, spec: KeypointSpec):
    """(center (2,), scale, joints (K, 2) 0-based, visible (K,)) of one entry."""
    where = f"{path}: entry #{index}"
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
    if "image" in entry:
        where = f"{where} ({entry['image']})"
    for key in _ENTRY_KEYS:
        if key not in entry:
            raise DatasetError(f"{where}: missing key {key!r}")
    k = spec.num_joints
    try:
        joints = np.asarray(entry["joints"], dtype=np.float64)
        visible = np.asarray(entry["joints_vis"], dtype=np.float64)
        center = np.asarray(entry["center"], dtype=np.float64)
        scale = float(entry["scale"])
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: non-numeric value: {err}") from None
    if joints.shape != (k, 2):
        raise DatasetError(f"{where}: key 'joints' must be {k} x 2, got shape {joints.shape}")
    if visible.shape != (k,):
        raise DatasetError(f"{where}: key 'joints_vis' must have {k} values, got {visible.size}")
    if center.shape != (2,) or not np.all(np.isfinite(center)):
        raise DatasetError(f"{where}: key 'center' must be 2 finite numbers")
    if not np.isfinite(scale) or scale <= 0:
        raise DatasetError(f"{where}: key 'scale' must be positive, got {entry['scale']}")
    return center, scale, joints - 1.0, visible


@dataclass(frozen=True)
class MpiiGroundTruth:
    """MPII validation ground truth, person-first and 0-based.

    ``joints`` (N, 16, 2) pixels; ``missing`` (N, 16) bool, True where the
    joint is not annotated; ``head_boxes`` (N, 2, 2) as [[x1, y1], [x2, y2]].
    """

    joints: np.ndarray
    missing: np.ndarray
    head_boxes: np.ndarray

    @property
    def head_sizes(self) -> np.ndarray:
        """0.6 x the head box diagonal: the PCKh normaliser (N,)."""
        return 0.6 * np.linalg.norm(self.head_boxes[:, 1] - self.head_boxes[:, 0], axis=1)


def load_mpii_gt(path: str | Path) -> MpiiGroundTruth:
    """Read ``mpii_gt_val.mat`` (pos_gt_src 16x2xN, jnt_missing 16xN, headboxes_src 2x2xN)."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, ValueError, TypeError) as err:
        raise DatasetError(f"{path}: cannot read .mat file: {err}") from err
    for key in _GT_KEYS:
        if key not in mat:
            raise DatasetError(f"{path}: missing key {key!r}")
    k = MPII.num_joints
    joints = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    if joints.shape[:2] != (k, 2) or joints.ndim not in (2, 3):
        raise DatasetError(f"{path}: key 'pos_gt_src' must be {k} x 2 x N, got {joints.shape}")
    # MATLAB drops a trailing singleton axis: a one-person file comes back 2-D.
    joints = joints.reshape(k, 2, -1)
    n = joints.shape[2]
    missing = np.asarray(mat["jnt_missing"])
    heads = np.asarray(mat["headboxes_src"], dtype=np.float64)
    if missing.size != k * n or missing.shape[0] != k:
        raise DatasetError(f"{path}: key 'jnt_missing' must be {k} x {n}, got {missing.shape}")
    if heads.size != 4 * n or heads.shape[:2] != (2, 2):
        raise DatasetError(f"{path}: key 'headboxes_src' must be 2 x 2 x {n}, got {heads.shape}")
    missing, heads = missing.reshape(k, n), heads.reshape(2, 2, n)
    return MpiiGroundTruth(
        joints=joints.transpose(2, 0, 1) - 1.0,
        missing=missing.T.astype(bool),
        head_boxes=heads.transpose(2, 0, 1) - 1.0,
    )


def load_mpii_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The joints (N, 16, 2) of a split's json as stored (1-based, MATLAB's) and their
    ``joints_vis`` (N, 16): the ground truth the reference's PCKh reads."""
    path = Path(path)
    entries = load_json_list(path, "entries")
    for index, entry in enumerate(entries):
        parse_entry(entry, index, path, MPII)
    joints = np.array([entry["joints"] for entry in entries], dtype=np.float64)
    visible = np.array([entry["joints_vis"] for entry in entries], dtype=np.float64)
    return joints.reshape(-1, MPII.num_joints, 2), visible.reshape(-1, MPII.num_joints)


def split_json(gt_mat: str | Path) -> Path:
    """The split's json beside its ground-truth .mat (``mpii_gt_val.mat``: ``mpii_val.json``),
    the pair the standard layout holds."""
    gt_mat = Path(gt_mat)
    return gt_mat.with_name(gt_mat.name.replace("mpii_gt_", "mpii_", 1)).with_suffix(".json")


def validate_mpii(
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    gt_file: str | Path | None = None,
    decode_images: bool = True,
    spec: KeypointSpec = MPII,
) -> list[str]:
    """Scan an MPII dataset and list every problem found (empty: all good).

    Give a ``root`` in the standard layout (every ``annotations/*.json``,
    ``images/``, ``annotations/mpii_gt_val.mat`` when present) or explicit
    paths. The ``.mat`` file must describe as many people as ``mpii_val.json``.
    """
    if root is not None:
        root = Path(root)
        ann_files = sorted((root / "annotations").glob("*.json"))
        image_dir = root / "images"
        gt_default = root / "annotations" / "mpii_gt_val.mat"
        gt_file = gt_default if gt_file is None and gt_default.exists() else gt_file
        if not ann_files:
            return [f"{root / 'annotations'}: no MPII annotation files (*.json) found"]
    elif ann_file is not None and image_dir is not None:
        ann_files = [Path(ann_file)]
    else:
        raise ValueError("give a dataset root, or both ann_file and image_dir")
    image_dir = Path(image_dir)

    problems: list[str] = []
    val_entries = None
    if not image_dir.is_dir():
        problems.append(f"{image_dir}: image folder not found")
    checked: set[str] = set()
    for path in ann_files:
        try:
            entries = load_json_list(path, "entries")
        except DatasetError as err:
            problems.append(str(err))
            continue
        if not entries:
            problems.append(f"{path}: no entries: the split is empty")
        if path.stem.endswith("val"):
            val_entries = len(entries)
        for index, entry in enumerate(entries):
            try:
                parse_entry(entry, index, path, spec)
            except DatasetError as err:
                problems.append(str(err))
                continue
            name = str(entry["image"])
            if name in checked or not image_dir.is_dir():
                continue
            checked.add(name)
            problem = image_problem(image_dir / name, f"{path.name} entry #{index}", decode_images)
            if problem is not None:
                problems.append(problem)

    if gt_file is not None:
        try:
            gt = load_mpii_gt(gt_file)
            if val_entries is not None and len(gt.joints) != val_entries:
                problems.append(
                    f"{gt_file}: {len(gt.joints)} people, but the validation json has {val_entries}"
                )
        except DatasetError as err:
            problems.append(str(err))
    return problems
