"""The KServe variant of the export: TorchServe started from the export's own
config/config.properties answers KServe v1 requests ({"instances": [...]})."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import requests
from sample_data import REAL_IMAGES
from serving.torchserve import TorchServe

from ihl.predict import predict_image

PHOTO = REAL_IMAGES / "000000001000.jpg"


@pytest.fixture(scope="module")
def kserve_torchserve(export_dir, tmp_path_factory):
    """As in the InferenceService pod, but with this model store (--model-store) and free ports."""
    server = TorchServe(
        tmp_path_factory.mktemp("kserve"),
        export_dir / "model-store",
        config=export_dir / "config" / "config.properties",
    )
    server.start()
    yield server
    server.stop()


def test_v1_instances_are_predicted_together(kserve_torchserve, served_model):
    model, cfg = served_model
    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    image = base64.b64encode(PHOTO.read_bytes()).decode()
    box = [30.0, 40.0, 120.0, 200.0]
    url = f"{kserve_torchserve.inference_url}/v1/models/ihl:predict"
    body = {"instances": [{"image": image}, {"image": image, "boxes": [box]}]}
    response = requests.post(url, json=body, timeout=120)
    assert response.status_code == 200, response.text
    whole, boxed = response.json()["predictions"]
    assert whole["model"] == {"name": "ihl", "version": "3"}
    for answer, boxes in ((whole, None), (boxed, [box])):
        [want] = predict_image(model, cfg, rgb, boxes)
        [got] = answer["persons"]
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=0.05)

    body["instances"][1]["boxes"] = [[30, 40, 0, 200]]
    refused = requests.post(url, json=body, timeout=120)
    assert refused.status_code == 400
    assert "zero or negative size" in refused.json()["predictions"][1]["error"]
