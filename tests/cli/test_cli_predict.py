"""`ihl predict` with a random-init `sample` checkpoint on real photos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sample_data import REAL_IMAGES

from ihl import config
from ihl.checkpoint import save_model
from ihl.models import build_model

IMAGES = ("000000401250.jpg", "sunglasses.jpg")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = config.load("sample")
    return save_model(tmp_path_factory.mktemp("ckpt") / "sample.pt", build_model(cfg.model), cfg)


def _sizes() -> dict[str, tuple[int, int]]:
    return {name: cv2.imread(str(REAL_IMAGES / name)).shape[:2] for name in IMAGES}


def _check_people(records: list[dict], sizes: dict[str, tuple[int, int]]) -> None:
    for record in records:
        h, w = sizes[record["file_name"]]
        keypoints = np.array(record["keypoints"]).reshape(-1, 3)
        assert keypoints.shape == (17, 3)
        assert (keypoints[:, 0] >= 0).all() and (keypoints[:, 0] <= w).all()
        assert (keypoints[:, 1] >= 0).all() and (keypoints[:, 1] <= h).all()
        assert ((keypoints[:, 2] >= 0) & (keypoints[:, 2] <= 1)).all()
        assert record["category_id"] == 1 and 0 <= record["score"] <= 1


def test_predict_whole_image_finds_one_person_per_image(cli, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = cli(
        "predict", checkpoint, *(REAL_IMAGES / n for n in IMAGES), "--out", out, "--whole-image"
    )
    assert result.exit_code == 0, result.output
    records = json.loads((out / "predictions.json").read_text())
    sizes = _sizes()
    assert sorted(r["file_name"] for r in records) == sorted(IMAGES)
    _check_people(records, sizes)
    for record in records:
        h, w = sizes[record["file_name"]]
        assert record["bbox"] == [0, 0, w, h]
    assert records[0]["image_id"] == 401250 and "image_id" not in records[1]
    for name in IMAGES:
        assert cv2.imread(str(out / name)).shape[:2] == sizes[name]


def test_predict_with_a_box_file_gives_one_person_per_box(cli, checkpoint, tmp_path):
    boxes = tmp_path / "boxes.json"
    detections = [
        {"image_id": 401250, "category_id": 1, "bbox": [10, 20, 100, 200], "score": 0.9},
        {"image_id": 401250, "category_id": 1, "bbox": [150, 30, 80, 160], "score": 0.6},
        {"image_id": 401250, "category_id": 2, "bbox": [0, 0, 50, 50], "score": 0.9},
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.9},
        {"file_name": "sunglasses.jpg", "bbox": [5, 5, 60, 90], "score": 0.8},
    ]
    boxes.write_text(json.dumps(detections))
    out = tmp_path / "out"
    result = cli(
        "predict", checkpoint, *(REAL_IMAGES / n for n in IMAGES), "--out", out, "--boxes", boxes
    )
    assert result.exit_code == 0, result.output
    records = json.loads((out / "predictions.json").read_text())
    assert [(r["file_name"], r["bbox"]) for r in records] == [
        ("000000401250.jpg", [10, 20, 100, 200]),
        ("000000401250.jpg", [150, 30, 80, 160]),
        ("sunglasses.jpg", [5, 5, 60, 90]),
    ]
    _check_people(records, _sizes())
    for record in records:
        x, y, w, h = record["bbox"]
        keypoints = np.array(record["keypoints"]).reshape(-1, 3)
        # The crop is the box padded by 1.25 and widened to 3:4: the keypoints stay near it.
        assert (keypoints[:, :2] >= [x - w, y - h]).all()
        assert (keypoints[:, :2] <= [x + 2 * w, y + 2 * h]).all()

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"sunglasses.jpg": [[5, 5, 60, 90, 0.3], [1, 1, 30, 40]]}))
    result = cli(
        "predict", checkpoint, REAL_IMAGES / "sunglasses.jpg", "--out", out, "--boxes", mapping
    )
    assert result.exit_code == 0, result.output
    records = json.loads((out / "predictions.json").read_text())
    assert [r["bbox"] for r in records] == [[5, 5, 60, 90], [1, 1, 30, 40]]


def test_predict_names_what_is_wrong(cli, checkpoint, tmp_path):
    image = REAL_IMAGES / IMAGES[0]
    result = cli("predict", checkpoint, tmp_path / "gone.jpg", "--out", tmp_path)
    assert result.exit_code == 2 and "gone.jpg" in result.output
    result = cli("predict", tmp_path / "none.pt", image, "--out", tmp_path)
    assert result.exit_code == 2 and "none.pt" in result.output

    unrelated = tmp_path / "unrelated.json"
    unrelated.write_text(json.dumps([{"image_id": 5, "bbox": [0, 0, 9, 9], "score": 1}]))
    result = cli("predict", checkpoint, image, "--out", tmp_path, "--boxes", unrelated)
    assert result.exit_code == 2 and "unrelated.json: none of its boxes" in result.output

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({IMAGES[0]: [[0, 0, -4, 9]]}))
    result = cli("predict", checkpoint, image, "--out", tmp_path, "--boxes", bad)
    assert result.exit_code == 2
    assert "bad.json" in result.output and "negative size" in result.output
