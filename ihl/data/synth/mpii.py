"""The synthetic set in the MPII layout HRNet's pose code reads: json annotations in MPII's
1-based coordinates, images, and the val ground truth as ``mpii_gt_val.mat``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io

from ihl.data.synth.render import MIN_VISIBLE_AREA, Person, render_scene, split_rng
from ihl.data.synth.write import atomic_dir, r2, write_jpeg, write_json

_MPII_EVAL_NAMES = (
    "rank",
    "rkne",
    "rhip",
    "lhip",
    "lkne",
    "lank",
    "pelv",
    "thor",
    "neck",
    "head",
    "rwri",
    "relb",
    "rsho",
    "lsho",
    "lelb",
    "lwri",
)
"""``dataset_joints`` of the official MPII gt file, which the HRNet evaluator reads."""


def _mpii_entry(person: Person, name: str, size: tuple[int, int]) -> dict | None:
    """One MPII json record in MPII's 1-based coordinates; None if nothing is annotatable."""
    w, h = size
    joints = person.mpii_joints
    vis = (
        (joints[:, 0] >= 0)
        & (joints[:, 0] <= w - 1)
        & (joints[:, 1] >= 0)
        & (joints[:, 1] <= h - 1)
    )
    if not vis.any():
        return None
    extent = np.clip(np.concatenate([joints[vis], person.head_box]), 0, [w - 1, h - 1])
    lo, hi = extent.min(0), extent.max(0)
    return {
        "image": name,
        "center": r2((lo + hi) / 2 + 1),
        "scale": round(float((hi - lo).max()) / 200, 6),
        "joints": [r2(j + 1) if v else [-1.0, -1.0] for j, v in zip(joints, vis, strict=True)],
        "joints_vis": [int(v) for v in vis],
    }


def _write_mpii_gt(path: Path, entries: list[dict], head_boxes: list[np.ndarray]) -> None:
    """The layout of the released ``mpii_gt_val.mat``, one person per entry of the val json.

    pos_gt_src (16, 2, N): joint x, y, 1-based (-1 where missing, as in the json), so
    that HRNet's ``np.transpose(preds, [1, 2, 0])`` of (N, 16, 2) predictions lines up
    with it; jnt_missing (16, N): 1 where the joint is not annotated; headboxes_src
    (2, 2, N): [top-left, bottom-right] x [x, y] of the head box, 1-based;
    dataset_joints: the official joint abbreviations the evaluator looks joints up by.
    """
    n = len(entries)
    pos = np.array([e["joints"] for e in entries], float).reshape(n, 16, 2).transpose(1, 2, 0)
    missing = 1 - np.array([e["joints_vis"] for e in entries], np.uint8).reshape(n, 16).T
    boxes = np.array(head_boxes, float).reshape(n, 2, 2).transpose(1, 2, 0) + 1
    names = np.empty((1, 16), object)
    names[0, :] = _MPII_EVAL_NAMES
    buf = io.BytesIO()
    scipy.io.savemat(
        buf,
        {
            "dataset_joints": names,
            "jnt_missing": missing,
            "pos_gt_src": pos,
            "headboxes_src": boxes,
        },
    )
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by ihl.data.synth".ljust(116)
    path.write_bytes(bytes(data))


def make_mpii_synth(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    max_people: int = 3,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a synthetic dataset in the MPII layout HRNet's pose code reads.

    Creates ``annotations/mpii_{train,val}.json`` (entries: image, center, scale,
    joints [16 x 2], joints_vis [16]), ``annotations/mpii_gt_val.mat`` and
    ``images/*.jpg``. Coordinates are 1-based like the released files. The person box
    spans the annotated joints and the head box (clipped to the image), occluded joints
    included, as MPII's centre and scale describe the whole person; center is its
    middle and scale its longer side / 200 (the height for upright figures), so the
    square MPII crop also holds a lying figure. joints_vis marks annotated (in-image)
    joints, occluded ones included, as MPII does. Persons are larger than in the COCO
    variant, as MPII's are. Returns image and person counts per split.
    """
    if not 1 <= max_people <= 99:
        raise ValueError("max_people must be between 1 and 99")
    summary: dict[str, int] = {}
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        (tmp / "annotations").mkdir()
        (tmp / "images").mkdir()
        for split_id, (split, count, base) in enumerate(
            (("train", num_train, 0), ("val", num_val, 1_000_000))
        ):
            entries, head_boxes = [], []
            for i in range(count):
                rng = split_rng(seed, 2 + split_id, i)
                scene = render_scene(
                    rng, image_size, (1, max_people), height_frac=(0.4, 1.0), overflow=0.15
                )
                name = f"{base + i:09d}.jpg"
                write_jpeg(tmp / "images" / name, scene.image)
                for person in scene.people:
                    entry = (
                        _mpii_entry(person, name, image_size)
                        if person.area >= MIN_VISIBLE_AREA
                        else None
                    )
                    if entry is not None:
                        entries.append(entry)
                        head_boxes.append(person.head_box)
            write_json(tmp / "annotations" / f"mpii_{split}.json", entries)
            if split == "val":
                _write_mpii_gt(tmp / "annotations" / "mpii_gt_val.mat", entries, head_boxes)
            summary[f"{split}_images"] = count
            summary[f"{split}_persons"] = len(entries)
    return summary
