"""The synthetic set in the COCO 2017 layout: keypoint annotations, images and the detector
boxes of the val split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ihl.data.keypoints import COCO
from ihl.data.synth.render import MIN_VISIBLE_AREA, Person, render_scene, split_rng
from ihl.data.synth.write import atomic_dir, r2, write_jpeg, write_json

MIN_KEYPOINT_AREA = 32 * 32
"""Persons with fewer visible pixels in a 320x240 COCO image get a box but no keypoints
(num_keypoints 0), as COCO leaves its small persons unannotated (its keypoint metrics have
no small range). Other image sizes scale it with their area (see min_keypoint_area)."""
DEFAULT_SIZE = (320, 240)


def min_keypoint_area(image_size: tuple[int, int]) -> float:
    """MIN_KEYPOINT_AREA for images of ``image_size`` (W, H): scaled with the image area, so the
    share of annotated persons does not depend on the image size (tiny test sets keep some)."""
    return MIN_KEYPOINT_AREA * image_size[0] * image_size[1] / (DEFAULT_SIZE[0] * DEFAULT_SIZE[1])


def _coco_annotation(person: Person, image_id: int, min_area: float) -> dict:
    kps = person.keypoints if person.area >= min_area else np.zeros((COCO.num_joints, 3))
    flat = []
    for x, y, v in kps:
        flat += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
    x, y, w, h = person.bbox
    return {
        "id": image_id * 100 + person.index + 1,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [x, y, w, h],
        "area": person.area,
        "iscrowd": 0,
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "keypoints": flat,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def _jitter_box(rng: np.random.Generator, box, pos: float, size: float, w: int, h: int):
    x, y, bw, bh = box
    cx = x + bw * (0.5 + rng.normal(0, pos))
    cy = y + bh * (0.5 + rng.normal(0, pos))
    bw, bh = bw * np.exp(rng.normal(0, size)), bh * np.exp(rng.normal(0, size))
    x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
    x1, y1 = min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def _detections(
    rng: np.random.Generator, people: list[Person], image_id: int, size: tuple[int, int]
) -> list[dict]:
    """Boxes as a person detector would give them: jittered, duplicated, sometimes wrong.

    Small people are missed more often and score lower; each found person may get
    low-scoring near-duplicates; every image gets a few low-scoring false positives.
    """
    w, h = size
    found = []
    for p in people:
        side = np.sqrt(p.area)
        if rng.random() < 0.02 + 0.3 * np.exp(-side / 12):
            continue
        score = float(np.clip(rng.normal(0.95, 0.03) - 0.4 * np.exp(-side / 20), 0.2, 0.999))
        found.append((_jitter_box(rng, p.bbox, 0.04, 0.06, w, h), score))
        for _ in range(rng.poisson(0.6)):
            found.append(
                (_jitter_box(rng, p.bbox, 0.15, 0.2, w, h), score * rng.uniform(0.05, 0.45))
            )
    for _ in range(rng.poisson(1.5)):
        bw = float(np.exp(rng.uniform(np.log(12), np.log(0.6 * w))))
        bh = bw * rng.uniform(1.0, 3.0)
        box = (rng.uniform(0, w - bw), rng.uniform(*sorted((-0.2 * bh, h - 0.8 * bh))), bw, bh)
        found.append((_jitter_box(rng, box, 0, 0, w, h), rng.uniform(0.01, 0.3)))
    dets = [
        {"image_id": image_id, "category_id": 1, "bbox": r2(box), "score": round(float(s), 4)}
        for box, s in found
        if box is not None
    ]
    return sorted(dets, key=lambda d: -d["score"])


def _coco_categories() -> list[dict]:
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(COCO.joints),
            "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
        }
    ]


def make_coco_synth(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    max_people: int = 4,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a synthetic person-keypoint dataset in the COCO 2017 layout.

    Creates ``annotations/person_keypoints_{train,val}2017.json``,
    ``{train,val}2017/*.jpg`` and
    ``person_detection_results/COCO_val2017_detections_AP_H_56_person.json``.
    Train image ids are 1.., val ids 1000001..; annotation id = image id * 100 + k.
    Persons whose joints all left the frame, or under ``min_keypoint_area`` visible pixels,
    are kept with num_keypoints 0, as COCO keeps them. Returns counts: images, persons
    and persons with keypoints per split, and val detections.
    """
    if not 1 <= max_people <= 99:
        raise ValueError("max_people must be between 1 and 99")
    out_dir = Path(out_dir)
    summary: dict[str, int] = {}
    min_area = min_keypoint_area(image_size)
    with atomic_dir(out_dir, overwrite) as tmp:
        (tmp / "annotations").mkdir()
        (tmp / "person_detection_results").mkdir()
        detections: list[dict] = []
        for split_id, (split, count, base) in enumerate(
            (("train", num_train, 1), ("val", num_val, 1_000_001))
        ):
            image_dir = tmp / f"{split}2017"
            image_dir.mkdir()
            images, annotations = [], []
            for i in range(count):
                rng = split_rng(seed, split_id, i)
                scene = render_scene(rng, image_size, (1, max_people))
                image_id = base + i
                name = f"{image_id:012d}.jpg"
                write_jpeg(image_dir / name, scene.image)
                images.append(
                    {
                        "id": image_id,
                        "file_name": name,
                        "width": image_size[0],
                        "height": image_size[1],
                        "license": 1,
                    }
                )
                people = [p for p in scene.people if p.area >= MIN_VISIBLE_AREA]
                annotations += [_coco_annotation(p, image_id, min_area) for p in people]
                if split == "val":
                    detections += _detections(rng, people, image_id, image_size)
            write_json(
                tmp / "annotations" / f"person_keypoints_{split}2017.json",
                {
                    "info": {
                        "description": f"ihl synthetic COCO-format person keypoints ({split})",
                        "version": "1.0",
                        "year": 2017,
                        "contributor": "ihl.data.synth",
                        "seed": seed,
                    },
                    "licenses": [{"id": 1, "name": "Synthetic, generated by ihl", "url": ""}],
                    "images": images,
                    "annotations": annotations,
                    "categories": _coco_categories(),
                },
            )
            summary[f"{split}_images"] = len(images)
            summary[f"{split}_persons"] = len(annotations)
            summary[f"{split}_persons_with_keypoints"] = sum(
                a["num_keypoints"] > 0 for a in annotations
            )
        write_json(
            tmp / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json",
            detections,
        )
        summary["val_detections"] = len(detections)
    return summary
