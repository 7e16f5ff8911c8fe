"""The KServe variant of the export: the session's TorchServe started from the export's own
config/config.properties answers KServe v1 requests ({"instances": [...]})."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import requests
from sample_data import REAL_IMAGES

from ihl.detection.detect import detect
from ihl.predict import predict_image

PHOTO = REAL_IMAGES / "000000001000.jpg"


def test_v1_instances_are_predicted_together(kserve, served_model, served_detector):
    model, cfg = served_model
    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    image = base64.b64encode(PHOTO.read_bytes()).decode()
    box = [30.0, 40.0, 120.0, 200.0]
    url = f"{kserve.inference_url}/v1/models/ihl:predict"
    body = {"instances": [{"image": image}, {"image": image, "boxes": [box]}]}
    response = requests.post(url, json=body, timeout=120)
    assert response.status_code == 200, response.text
    detected, boxed = response.json()["predictions"]
    assert detected["model"] == {"name": "ihl", "version": "3"}
    ((boxes, scores),) = detect(served_detector[0], [rgb], served_detector[1])
    for answer, expected in (
        (detected, predict_image(model, cfg, rgb, boxes, scores)),
        (boxed, predict_image(model, cfg, rgb, [box])),
    ):
        assert len(answer["persons"]) == len(expected)
        for got, want in zip(answer["persons"], expected, strict=True):
            np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-3)
            np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=0.05)

    body["instances"][1]["boxes"] = [[30, 40, 0, 200]]
    refused = requests.post(url, json=body, timeout=120)
    assert refused.status_code == 400
    assert "zero or negative size" in refused.json()["predictions"][1]["error"]
