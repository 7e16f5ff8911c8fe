"""COCO test-dev: an image-info file (images, no annotations) and any detection file."""

import json

import pytest
from sample_data import COCO_ANN, COCO_DETS, COCO_IMAGES

from ihl.data.coco import CocoKeypoints
from ihl.data.coco_format import is_image_info
from ihl.data.errors import DatasetError


def image_info_from_sample(tmp_path):
    """The vendored sample's annotation file as test-dev ships its image-info file."""
    data = json.loads(COCO_ANN.read_text())
    info = {k: v for k, v in data.items() if k != "annotations"}
    path = tmp_path / "image_info_test-dev2017.json"
    path.write_text(json.dumps(info))
    return path


def test_image_info_file_with_detections_gives_crops(tmp_path):
    info = image_info_from_sample(tmp_path)
    assert is_image_info(info) and not is_image_info(COCO_ANN)
    ds = CocoKeypoints(info, COCO_IMAGES, input_size=(64, 64), detections=COCO_DETS)
    assert len(ds) > 0 and ds[0]["image"].shape == (3, 64, 64)
    with pytest.raises(DatasetError, match="'annotations'"):
        CocoKeypoints(info, COCO_IMAGES, input_size=(64, 64))
