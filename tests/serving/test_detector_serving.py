"""TorchServe with a person detector and ONNX Runtime packed in the archive: a photo of
several people and no boxes in, one skeleton per detected person out.

The detector here trains for seconds on a tiny synthetic set and the pose model is
random, so the share of people found is printed, not bounded; the main job's models
give the meaningful figure (docs/inference.md).
"""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
import requests
import torch
from serving.torchserve import TorchServe

from ihl import config
from ihl.checkpoint import load_model, save_model
from ihl.detection.detect import detect
from ihl.detection.models import load_detector
from ihl.edge.export import export_model
from ihl.metrics.coco import matched_fraction
from ihl.models import build_model
from ihl.predict import predict_image

TOLERANCE = 0.05


@pytest.fixture(scope="module")
def served(trained_detector, tmp_path_factory):
    """A served archive (runtime onnx, detector packed), its checkpoint and detector file."""
    work = tmp_path_factory.mktemp("served")
    _, _, detector_file = trained_detector
    torch.manual_seed(0)
    pose_cfg = config.load("sample", {"model.input_size": [64, 64]})
    checkpoint = save_model(work / "model.pt", build_model(pose_cfg.model), pose_cfg)
    export = work / "export"
    export_model(
        checkpoint, export, name="ihl", version="1", runtime="onnx",
        detector=detector_file, batch_size=2, max_batch_delay=50,
    )  # fmt: skip
    card = (export / "model_card.md").read_text()
    assert "| runtime | onnx |" in card and "fcos_small" in card
    server = TorchServe(work / "ts", export / "model-store")
    server.start()
    yield server, checkpoint, detector_file
    server.stop()


def _post(server, **kwargs):
    return requests.post(
        f"{server.inference_url}/predictions/ihl", headers=server.headers(), timeout=120, **kwargs
    )


def _crowded_image(root):
    coco = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    counts = {}
    for a in coco["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + (a["num_keypoints"] > 0)
    image_id = max(counts, key=counts.get)
    image = next(im for im in coco["images"] if im["id"] == image_id)
    people = [a for a in coco["annotations"] if a["image_id"] == image_id]
    return root / "val2017" / image["file_name"], people


def test_no_boxes_detects_and_answers_each_person(served, coco_synth):
    server, checkpoint, detector_file = served
    path, truth = _crowded_image(coco_synth)
    assert sum(a["num_keypoints"] > 0 for a in truth) >= 2
    response = _post(server, data=path.read_bytes())
    assert response.status_code == 200, response.text
    persons = response.json()["persons"]

    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    detector, detector_cfg = load_detector(detector_file)
    ((boxes, scores),) = detect(detector, [rgb], detector_cfg)
    model, cfg = load_model(checkpoint)
    expected = predict_image(model.eval(), cfg, rgb, boxes, scores)
    assert 0 < len(persons) == len(expected) <= 6
    for got, want in zip(persons, expected, strict=True):
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
        assert got["box_score"] == pytest.approx(want["box_score"], abs=1e-4)
        assert 0.05 <= got["box_score"] <= 1
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=TOLERANCE)
    found = matched_fraction(
        truth, [p["keypoints"] for p in persons], [p["score"] for p in persons]
    )
    print(
        f"persons matched with OKS > 0.5: {found:.2f} of {len(truth)} (detector: seconds "
        "of training; pose model: random)"
    )
    assert 0.0 <= found <= 1.0


def test_given_boxes_are_used_and_an_empty_list_means_nobody(served, coco_synth):
    server, _, _ = served
    path, _ = _crowded_image(coco_synth)
    image = base64.b64encode(path.read_bytes()).decode()
    response = _post(server, json={"image": image, "boxes": []})
    assert response.status_code == 200 and response.json()["persons"] == []
    boxes = [[10, 10, 40, 80], [70, 20, 30, 60, 0.4]]
    response = _post(server, json={"image": image, "boxes": boxes})
    persons = response.json()["persons"]
    assert [p["bbox"] for p in persons] == [[10, 10, 40, 80], [70, 20, 30, 60]]
    assert [p["box_score"] for p in persons] == [1.0, 0.4]
