"""The synthetic set in the CrowdPose layout the reference reads: COCO-format files with 14
joints and no 'area', every image with its crowdIndex, and the test split's detector boxes.

Figures are the COCO variant's, more of them per image. The 12 limb joints are the COCO
keypoints' (same order, same visibility); top_head and neck are the figure's head-top and
upper-neck points, v=2 where their pixel shows this person, v=1 where something else covers
it, and (0, 0, 0) outside the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ihl.data.keypoints import CROWDPOSE
from ihl.data.synth.coco import _detections, min_keypoint_area
from ihl.data.synth.render import MIN_VISIBLE_AREA, Person, Scene, render_scene, split_rng
from ihl.data.synth.write import atomic_dir, write_jpeg, write_json

SPLITS = ("trainval", "test")
"""The splits the reference trains and tests on (ihl.data.crowdpose reads them)."""
DETECTIONS = "annotations/det_for_crowd_test_0.1_0.5.json"


def crowdpose_keypoints(person: Person, scene: Scene) -> np.ndarray:
    """(14, 3) CrowdPose keypoints of a rendered person, 0-based pixels."""
    h, w = scene.labels.shape
    out = np.zeros((CROWDPOSE.num_joints, 3))
    out[:12] = person.keypoints[5:17]
    owner = scene.owner()
    for row, name in ((12, "head_top"), (13, "upper_neck")):
        x, y = person.points[name]
        col, line = int(round(x)), int(round(y))
        if 0 <= col < w and 0 <= line < h:
            out[row] = (x, y, 2 if owner[line, col] == person.index else 1)
    return out


def crowd_index(boxes: list[tuple], keypoints: list[np.ndarray]) -> float:
    """CrowdPose's crowding measure of an image: over its persons, the mean ratio of other
    persons' labelled joints inside a person's box to that person's own labelled joints."""
    ratios = []
    for i, (x, y, bw, bh) in enumerate(boxes):
        own = int((keypoints[i][:, 2] > 0).sum())
        if own == 0:
            continue
        others = 0
        for j, kps in enumerate(keypoints):
            if j != i:
                seen = kps[kps[:, 2] > 0]
                inside = (seen[:, 0] >= x) & (seen[:, 0] <= x + bw)
                inside &= (seen[:, 1] >= y) & (seen[:, 1] <= y + bh)
                others += int(inside.sum())
        ratios.append(others / own)
    return round(float(np.mean(ratios)), 4) if ratios else 0.0


def _annotation(kps: np.ndarray, person: Person, image_id: int, min_area: float) -> dict:
    if person.area < min_area:
        kps = np.zeros_like(kps)
    flat = []
    for x, y, v in kps:
        flat += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
    return {
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "iscrowd": 0,
        "keypoints": flat,
        "image_id": image_id,
        "bbox": list(person.bbox),
        "category_id": 1,
        "id": image_id * 100 + person.index + 1,
    }


def make_crowdpose_synth(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    max_people: int = 6,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a synthetic dataset in the CrowdPose layout ``ihl.data.crowdpose`` reads.

    Creates ``annotations/mmpose_crowdpose_{trainval,test}.json``, ``images/*.jpg`` and
    ``annotations/det_for_crowd_test_0.1_0.5.json`` (detector-like boxes for the test
    split). Trainval image ids are 1.., test ids 1000001... Returns image and person counts
    per split and the number of test detections.
    """
    if not 1 <= max_people <= 99:
        raise ValueError("max_people must be between 1 and 99")
    summary: dict[str, int] = {}
    min_area = min_keypoint_area(image_size)
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        (tmp / "annotations").mkdir()
        (tmp / "images").mkdir()
        detections: list[dict] = []
        for split_id, (split, count, base) in enumerate(
            ((SPLITS[0], num_train, 1), (SPLITS[1], num_val, 1_000_001))
        ):
            images, annotations = [], []
            for i in range(count):
                rng = split_rng(seed, 4 + split_id, i)
                scene = render_scene(rng, image_size, (2, max_people))
                image_id = base + i
                name = f"{image_id:012d}.jpg"
                write_jpeg(tmp / "images" / name, scene.image)
                people = [p for p in scene.people if p.area >= MIN_VISIBLE_AREA]
                kps = [crowdpose_keypoints(p, scene) for p in people]
                anns = [
                    _annotation(k, p, image_id, min_area) for k, p in zip(kps, people, strict=True)
                ]
                labelled = [np.array(a["keypoints"]).reshape(-1, 3) for a in anns]
                images.append(
                    {
                        "file_name": name,
                        "id": image_id,
                        "height": image_size[1],
                        "width": image_size[0],
                        "crowdIndex": crowd_index([p.bbox for p in people], labelled),
                    }
                )
                annotations += anns
                if split == SPLITS[1]:
                    detections += _detections(rng, people, image_id, image_size)
            write_json(
                tmp / "annotations" / f"mmpose_crowdpose_{split}.json",
                {
                    "images": images,
                    "annotations": annotations,
                    "categories": [
                        {
                            "supercategory": "person",
                            "id": 1,
                            "name": "person",
                            "keypoints": list(CROWDPOSE.joints),
                            "skeleton": [[a + 1, b + 1] for a, b in CROWDPOSE.skeleton],
                        }
                    ],
                },
            )
            summary[f"{split}_images"] = len(images)
            summary[f"{split}_persons"] = len(annotations)
        write_json(tmp / DETECTIONS, detections)
        summary["test_detections"] = len(detections)
    return summary
