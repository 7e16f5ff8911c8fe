"""Drawing poses on images: predictions (``ihl predict``) and ground truth (``ihl show-gt``).

Both go through ``draw_person`` so a prediction and its ground truth look the
same: the figure's left side orange, its right side blue, the centre line
green, which makes a left/right swap visible at a glance. Sides come from the
joint names in the ``KeypointSpec`` rather than a second table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ihl.data.coco_format import load_json
from ihl.data.errors import DatasetError
from ihl.data.keypoints import COCO, CROWDPOSE, MPII, KeypointSpec
from ihl.image_io import read_image_bgr

LEFT = (0, 140, 255)
RIGHT = (255, 120, 0)
CENTRE = (60, 200, 60)
BOX = (0, 220, 220)
"""BGR colours."""
_MPII_KEYS = ("image", "center", "scale", "joints", "joints_vis")


def joint_sides(spec: KeypointSpec) -> np.ndarray:
    """-1 for left joints, 1 for right, 0 for central ones (nose, pelvis, ...)."""
    sides = []
    for name in spec.joints:
        side = name.partition("_")[0]
        sides.append(-1 if side in ("left", "l") else 1 if side in ("right", "r") else 0)
    return np.array(sides)


def _side_colour(side: int) -> tuple[int, int, int]:
    return LEFT if side < 0 else RIGHT if side > 0 else CENTRE


def _line_width(image: np.ndarray) -> int:
    return max(1, round(max(image.shape[:2]) / 400))


def draw_person(
    image: np.ndarray,
    keypoints: np.ndarray,
    spec: KeypointSpec,
    *,
    threshold: float = 0.3,
    bbox: Sequence[float] | None = None,
    label: str | None = None,
) -> np.ndarray:
    """Draw one person's skeleton (and box) on a BGR image, in place; returns the image.

    ``keypoints`` is (K, 3) as x, y, score in image pixels; joints scoring below
    ``threshold`` are hidden along with their limbs, so an unsure guess is not
    drawn as if it were seen. Ground truth passes visibility as the score.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(spec.num_joints, 3)
    shown = (keypoints[:, 2] >= threshold) & np.isfinite(keypoints[:, :2]).all(1)
    sides = joint_sides(spec)
    width = _line_width(image)
    xy = np.nan_to_num(keypoints[:, :2]).clip(-1e4, 1e4)
    points = [(int(round(x)), int(round(y))) for x, y in xy]
    if bbox is not None:
        x, y, w, h = (float(v) for v in bbox)
        cv2.rectangle(
            image, (round(x), round(y)), (round(x + w), round(y + h)), BOX, width, cv2.LINE_AA
        )
        if label:
            cv2.putText(
                image,
                label,
                (round(x) + 2, max(round(y) - 4, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * width,
                BOX,
                width,
                cv2.LINE_AA,
            )
    for a, b in spec.skeleton:
        if shown[a] and shown[b]:
            side = sides[a] if sides[a] == sides[b] else 0
            cv2.line(image, points[a], points[b], _side_colour(side), width + 1, cv2.LINE_AA)
    for j in np.flatnonzero(shown):
        cv2.circle(image, points[j], width + 2, _side_colour(sides[j]), -1, cv2.LINE_AA)
        cv2.circle(image, points[j], width + 2, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def draw_people(
    image: np.ndarray, people: Sequence[dict], spec: KeypointSpec, threshold: float = 0.3
) -> np.ndarray:
    """Draw ``predict_image`` output (dicts with bbox, score, keypoints) on a BGR image."""
    for person in people:
        draw_person(
            image,
            np.asarray(person["keypoints"]),
            spec,
            threshold=threshold,
            bbox=person.get("bbox"),
            label=f"{person['score']:.2f}" if "score" in person else None,
        )
    return image


def write_image(path: Path, image: np.ndarray) -> Path:
    """cv2.imwrite that fails loudly: OpenCV only returns False."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write image")
    return path


def _coco_people(
    ann_file: Path, spec: KeypointSpec = COCO
) -> tuple[dict[str, list[dict]], list[str]]:
    """Per image file name, its people as {bbox, keypoints (K, 3)}; and every file name.
    CrowdPose files have the same form with their 14 joints."""
    data = load_json(ann_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{ann_file}: expected a COCO object with an 'images' list")
    names: dict[int, str] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DatasetError(f"{ann_file}: image #{index}: needs keys 'id' and 'file_name'")
        names[int(image["id"])] = str(image["file_name"])
    people: dict[str, list[dict]] = defaultdict(list)
    for index, ann in enumerate(data.get("annotations") or []):
        where = f"{ann_file}: annotation #{index}"
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DatasetError(f"{where}: needs key 'image_id'")
        if int(ann["image_id"]) not in names:
            raise DatasetError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        try:
            keypoints = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: key 'keypoints' is not a list of numbers") from None
        if keypoints.size not in (0, 3 * spec.num_joints):
            raise DatasetError(f"{where}: key 'keypoints' must have {3 * spec.num_joints} numbers")
        keypoints = keypoints.reshape(-1, 3) if keypoints.size else np.zeros((spec.num_joints, 3))
        keypoints[:, 2] = keypoints[:, 2] > 0
        people[names[int(ann["image_id"])]].append(
            {"bbox": ann.get("bbox"), "keypoints": keypoints}
        )
    return people, list(names.values())


def _mpii_people(ann_file: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """The same from an MPII json: 1-based joints made 0-based, box from centre and scale."""
    entries = load_json(ann_file)
    if not isinstance(entries, list):
        raise DatasetError(f"{ann_file}: expected a JSON list of MPII entries")
    people: dict[str, list[dict]] = defaultdict(list)
    for index, entry in enumerate(entries):
        where = f"{ann_file}: entry #{index}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in _MPII_KEYS if k not in entry]
        if missing:
            raise DatasetError(f"{where}: missing key {missing[0]!r}")
        try:
            joints = np.asarray(entry["joints"], dtype=np.float64) - 1.0
            visible = np.asarray(entry["joints_vis"], dtype=np.float64)
            side = 200.0 * float(entry["scale"])
            cx, cy = np.asarray(entry["center"], dtype=np.float64) - 1.0
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: non-numeric or malformed value: {err}") from None
        if joints.shape != (MPII.num_joints, 2) or visible.shape != (MPII.num_joints,):
            raise DatasetError(f"{where}: keys 'joints'/'joints_vis' must hold 16 joints")
        people[str(entry["image"])].append(
            {
                "bbox": [cx - side / 2, cy - side / 2, side, side],
                "keypoints": np.concatenate([joints, (visible > 0)[:, None]], axis=1),
            }
        )
    return people, list(people)


def show_ground_truth(
    ann_file: str | Path,
    image_dir: str | Path,
    out_dir: str | Path,
    *,
    dataset: str = "coco",
    limit: int | None = None,
) -> list[Path]:
    """Draw the annotated people of each image (at most ``limit`` images) into ``out_dir``.

    For checking a dataset by eye: wrong joint order, flipped sides or shifted
    coordinates show at once. MPII boxes are the 200 x scale square the
    annotation implies, without the loaders' padding. Returns the written files.
    """
    ann_file, image_dir, out_dir = Path(ann_file), Path(image_dir), Path(out_dir)
    if dataset in ("coco", "crowdpose"):
        spec = COCO if dataset == "coco" else CROWDPOSE
        people, names = _coco_people(ann_file, spec)
    elif dataset == "mpii":
        people, names = _mpii_people(ann_file)
        spec = MPII
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose coco, mpii or crowdpose")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names[:limit]:
        image = read_image_bgr(image_dir / name)
        for person in people.get(name, []):
            draw_person(image, person["keypoints"], spec, threshold=0.5, bbox=person["bbox"])
        written.append(write_image(out_dir / f"{Path(name).stem}.jpg", image))
    return written
