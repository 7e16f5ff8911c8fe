"""Pose prediction on whole images: person boxes -> crops -> model -> image keypoints.

``make_crops`` and ``predict_image`` work on decoded images in memory so that
serving can call them; ``predict_files`` adds file reading, person boxes from a
file, the results JSON and drawn images for ``ihl predict``.

Box files (``load_boxes``) come in either of two forms:

* COCO detection results, a list of ``{"bbox": [x, y, w, h], "score": s,
  "image_id": id}`` or ``{..., "file_name": name}``. A record belongs to the
  image whose file name is ``file_name`` (base name only), or, with
  ``image_id``, to the image whose file stem is that number, the COCO naming
  (``000000000785.jpg`` is image 785). Records of another ``category_id``
  than 1 (person) are skipped; ``score`` defaults to 1.
* A mapping ``{file_name: [[x, y, w, h], [x, y, w, h, score], ...]}``.

Records for images not being predicted are ignored, since one detections file
usually covers a whole dataset; an image with no record gets no people. A file
none of whose records matches any image is refused as a likely mistake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ihl.boxes import BoxError, parse_box
from ihl.config import Config, DetectorConfig
from ihl.data.coco_format import load_json
from ihl.data.errors import DatasetError
from ihl.data.keypoints import get_spec
from ihl.data.transforms import (
    box_to_center_scale,
    coords_to_image,
    get_affine_transform,
    warp,
)
from ihl.detection.detect import detect
from ihl.image_io import read_image_bgr
from ihl.inference import model_device, predict_crops
from ihl.metrics.coco import rescore, write_results
from ihl.visualize import draw_people, write_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PADDING = 1.25
"""Context around a person box, as in evaluation (``box_to_center_scale``'s default)."""

Boxes = tuple[np.ndarray, np.ndarray]
"""(N, 4) x, y, w, h boxes in image pixels and their (N,) scores."""


def make_crops(
    image_rgb: np.ndarray,
    boxes_xywh: Sequence[Sequence[float]] | np.ndarray,
    input_size: tuple[int, int],
    padding: float = PADDING,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Cut one model input per person box out of an H x W x 3 uint8 image.

    ``input_size`` is (width, height), as ``ModelConfig.input_size`` holds it.
    Returns the crops (N, 3, height, width) uint8, ready for ``predict_crops``,
    with the centres and scales (N, 2) that ``coords_to_image`` needs to map
    predictions back to the image.
    """
    width, height = (int(v) for v in input_size)
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    crops = np.empty((len(boxes), height, width, 3), dtype=np.uint8)
    centers = np.empty((len(boxes), 2))
    scales = np.empty((len(boxes), 2))
    for i, box in enumerate(boxes):
        centers[i], scales[i] = box_to_center_scale(box, width / height, padding)
        matrix = get_affine_transform(centers[i], scales[i], 0.0, (width, height))
        crops[i] = warp(image_rgb, matrix, (width, height))
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(), centers, scales


def predict_image(
    model: torch.nn.Module,
    cfg: Config,
    image_rgb: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    box_scores: Sequence[float] | np.ndarray | None = None,
    *,
    flip: bool | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Keypoints of the person in each box of an RGB image (the whole image if no boxes).

    Returns one dict per box, in box order: ``bbox`` [x, y, w, h], ``box_score`` (the
    detector's, 1 for a box given without one), ``score`` (box score x mean keypoint
    score above 0.2, the evaluation's instance score) and ``keypoints`` [[x, y, score]] * K
    in image pixels. Keypoints may lie outside the image where the model places a cut-off
    limb. ``flip`` overrides ``cfg.test.flip``; ``precision`` is ``predict_crops``'.
    """
    return predict_images(
        model,
        cfg,
        [image_rgb],
        [boxes],
        [box_scores],
        flip=flip,
        batch_size=batch_size,
        precision=precision,
    )[0]


def predict_images(
    model: torch.nn.Module,
    cfg: Config,
    images_rgb: Sequence[np.ndarray],
    boxes: Sequence[Sequence[Sequence[float]] | np.ndarray | None],
    box_scores: Sequence[Sequence[float] | np.ndarray | None],
    *,
    flip: bool | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> list[list[dict[str, Any]]]:
    """``predict_image`` for several images at once, their crops batched together.

    The crops of all images go through the network in batches of up to
    ``batch_size``, so many small requests (a serving batch) cost one forward
    pass. Returns one list of people per image.
    """
    spec = get_spec(cfg.data.dataset)
    if spec.num_joints != cfg.model.num_joints:
        raise ValueError(
            f"model predicts {cfg.model.num_joints} joints but data.dataset {spec.name!r} "
            f"has {spec.num_joints}"
        )
    test = cfg.test if flip is None else cfg.test.model_copy(update={"flip": flip})
    input_wh = cfg.model.input_size
    device = model_device(model)
    model.eval()
    jobs = []  # (image index, box, box score), in request order
    for index, (image, image_boxes, scores) in enumerate(
        zip(images_rgb, boxes, box_scores, strict=True)
    ):
        h, w = image.shape[:2]
        image_boxes = np.asarray(
            [[0, 0, w, h]] if image_boxes is None else image_boxes, dtype=np.float64
        ).reshape(-1, 4)
        scores = np.ones(len(image_boxes)) if scores is None else np.asarray(scores, np.float64)
        jobs += [(index, box, score) for box, score in zip(image_boxes, scores, strict=True)]
    people: list[list[dict[str, Any]]] = [[] for _ in images_rgb]
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        crops, centers, scales = zip(
            *(make_crops(images_rgb[i], box[None], input_wh) for i, box, _ in batch), strict=True
        )
        pred = predict_crops(
            model, torch.cat(crops).to(device), test, list(spec.flip_index), precision
        )
        coords = coords_to_image(
            pred.coords.float().cpu().numpy(),
            np.concatenate(centers),
            np.concatenate(scales),
            0.0,
            input_wh,
        )
        kp_scores = pred.scores.float().cpu().numpy()
        instance = rescore(kp_scores, np.array([score for _, _, score in batch]))
        for (i, box, box_score), xy, s, score in zip(
            batch, coords, kp_scores, instance, strict=True
        ):
            people[i].append(
                {
                    "bbox": [float(v) for v in box],
                    "box_score": float(box_score),
                    "score": float(score),
                    "keypoints": np.concatenate([xy, s[:, None]], axis=1).tolist(),
                }
            )
    return people


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files from paths that are files or folders (their images, sorted by name).

    Output images are named by stem, so two inputs with one stem are refused.
    """
    paths = [Path(p) for p in paths]
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{path}: image file or folder not found")
    if not images:
        raise FileNotFoundError("no images found in " + ", ".join(map(str, paths)))
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"{seen[image.stem]} and {image}: two images with one name")
        seen[image.stem] = image
    return images


def _numeric_id(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def _box(value: Any, where: str) -> tuple[list[float], float]:
    """(x, y, w, h) and score from [x, y, w, h] or [x, y, w, h, score]."""
    try:
        return parse_box(value)
    except BoxError as err:
        raise DatasetError(f"{where}: box {err}") from None


def load_boxes(path: str | Path, images: Sequence[Path]) -> dict[Path, Boxes]:
    """Person boxes per image from a box file (formats in the module docstring)."""
    path = Path(path)
    data = load_json(path)
    by_name = {image.name: image for image in images}
    by_id = {_numeric_id(image): image for image in images if _numeric_id(image) is not None}
    found: dict[Path, list[tuple[list[float], float]]] = {}
    if isinstance(data, dict):
        for name, boxes in data.items():
            if not isinstance(boxes, list):
                raise DatasetError(f"{path}: key {name!r} must hold a list of boxes")
            image = by_name.get(Path(name).name)
            for i, box in enumerate(boxes):
                parsed = _box(box, f"{path}: {name} box #{i}")
                if image is not None:
                    found.setdefault(image, []).append(parsed)
    elif isinstance(data, list):
        for i, record in enumerate(data):
            where = f"{path}: record #{i}"
            if not isinstance(record, dict) or "bbox" not in record:
                raise DatasetError(f"{where}: expected an object with key 'bbox'")
            if record.get("category_id", 1) != 1:
                continue
            if "file_name" in record:
                image = by_name.get(Path(str(record["file_name"])).name)
            elif "image_id" in record:
                image = by_id.get(record["image_id"])
            else:
                raise DatasetError(f"{where}: needs key 'file_name' or 'image_id'")
            box, _ = _box(record["bbox"], where)
            score = record.get("score", 1.0)
            if not isinstance(score, int | float) or not math.isfinite(score):
                raise DatasetError(f"{where}: key 'score' must be a finite number")
            if image is not None:
                found.setdefault(image, []).append((box, float(score)))
    else:
        raise DatasetError(f"{path}: expected a list of detections or a {{file_name: boxes}} map")
    if not found:
        raise DatasetError(
            f"{path}: none of its boxes belongs to the given images (matched by file name, "
            "or image_id against numeric file names)"
        )
    return {
        image: (np.array([b for b, _ in boxes]), np.array([s for _, s in boxes]))
        for image, boxes in found.items()
    }


def predict_files(
    model: torch.nn.Module,
    cfg: Config,
    images: Sequence[Path],
    out_dir: str | Path,
    boxes: dict[Path, Boxes] | None = None,
    *,
    min_box_score: float = 0.0,
    flip: bool | None = None,
    batch_size: int = 32,
    draw: bool = True,
    detector: tuple[torch.nn.Module, DetectorConfig] | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Predict every image, write ``predictions.json`` and, if ``draw``, ``<stem>.jpg`` each.

    Without ``boxes`` the ``detector`` (a model and its config) finds the persons, or
    else each image is one person box; with them, images missing from the mapping get
    no people. Results are COCO keypoint results keyed by
    ``file_name`` (plus ``image_id`` for numeric file names, so COCO images
    can be scored directly), with the person's ``bbox``. ``precision`` is the pose model's
    (``predict_crops``); the detector runs in float32.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = get_spec(cfg.data.dataset)
    results: list[dict[str, Any]] = []
    for path in images:
        image = read_image_bgr(path)
        if boxes is None and detector is None:
            people = predict_image(
                model, cfg, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), flip=flip, precision=precision
            )
        else:
            if boxes is None:
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                ((xywh, scores),) = detect(detector[0], [rgb], detector[1])
            else:
                xywh, scores = boxes.get(path, (np.zeros((0, 4)), np.zeros(0)))
            keep = scores >= min_box_score
            people = []
            if keep.any():
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                people = predict_image(
                    model,
                    cfg,
                    rgb,
                    xywh[keep],
                    scores[keep],
                    flip=flip,
                    batch_size=batch_size,
                    precision=precision,
                )
        ids = {} if _numeric_id(path) is None else {"image_id": _numeric_id(path)}
        results += [
            {
                "file_name": path.name,
                **ids,
                "category_id": 1,
                "bbox": person["bbox"],
                "keypoints": [v for point in person["keypoints"] for v in point],
                "score": person["score"],
                "box_score": person["box_score"],
            }
            for person in people
        ]
        if draw:
            write_image(out_dir / f"{path.stem}.jpg", draw_people(image, people, spec))
    predictions = write_results(results, out_dir / "predictions.json")
    return {"images": len(images), "people": len(results), "predictions": str(predictions)}
