"""The person detector: config, building, training on the synthetic set, filtering,
box AP, files, and plumbing on real photos of every image mode."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from sample_data import COCO_IMAGES, REAL_IMAGES

from ihl import config
from ihl.config import DetectorConfig
from ihl.detection.boxap import box_ap, evaluate_detector
from ihl.detection.detect import detect, select_persons
from ihl.detection.models import (
    DetectorError,
    _torchvision_weights,
    build_detector,
    load_detector,
)
from ihl.image_io import read_image_bgr


def test_config_has_a_detector_section_that_refuses_bad_values():
    cfg = config.load("sample")
    assert cfg.detector.architecture == "fcos_small" and cfg.detector.weights is None
    assert config.load("coco_res50").detector.weights == "DEFAULT"
    with pytest.raises(config.ConfigError, match="detector.max_persons"):
        config.load("sample", {"detector.max_persons": 0})
    with pytest.raises(config.ConfigError, match="detector.nmsiou: unknown key"):
        config.load("sample", {"detector.nmsiou": 0.5})
    with pytest.raises(config.ConfigError, match="max_size"):
        config.load("sample", {"detector.min_size": 800, "detector.max_size": 600})


def test_torchvision_weight_names_resolve_without_downloading():
    assert _torchvision_weights("fcos_resnet50_fpn", "COCO_V1").name == "COCO_V1"
    full = _torchvision_weights(
        "fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT"
    )
    assert full.meta["categories"][1] == "person"
    with pytest.raises(DetectorError, match="IMAGENET"):
        _torchvision_weights("fcos_resnet50_fpn", "IMAGENET")
    with pytest.raises(DetectorError, match="not weights of fcos"):
        _torchvision_weights("fcos_resnet50_fpn", "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1")
    with pytest.raises(DetectorError, match="no torchvision weights"):
        build_detector(DetectorConfig(architecture="fcos_small", weights="COCO_V1"))


def test_select_persons_keeps_confident_distinct_persons_inside_the_image():
    boxes = torch.tensor(
        [
            [10.0, 10, 50, 90],  # person 0.9
            [12.0, 11, 51, 90],  # duplicate of it, 0.8: suppressed by NMS
            [60.0, 5, 150, 100],  # person 0.7, runs off the 120 x 80 image: clipped
            [0.0, 0, 30, 30],  # not a person (label 3)
            [70.0, 70, 80, 79],  # person below the threshold
            [90.0, 10, 110, 40],  # person 0.6, beyond max_persons
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.1, 0.6])
    labels = torch.tensor([1, 1, 1, 3, 1, 1])
    cfg = DetectorConfig(score_threshold=0.3, nms_iou=0.5, max_persons=2)
    xywh, kept = select_persons(boxes, scores, labels, (120, 80), cfg)
    np.testing.assert_allclose(kept, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(xywh, [[10, 10, 40, 70], [60, 5, 60, 75]])


def test_box_ap_is_one_for_the_ground_truth_and_zero_for_nothing(coco_synth):
    ann = coco_synth / "annotations" / "person_keypoints_val2017.json"
    gt = json.loads(ann.read_text())["annotations"]
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in gt
    ]
    assert box_ap(perfect, ann)["box_AP"] == pytest.approx(1.0)
    assert box_ap([], ann)["box_AP"] == 0.0
    shifted = [{**r, "bbox": [r["bbox"][0] + 200, *r["bbox"][1:]]} for r in perfect]
    assert box_ap(shifted, ann)["box_AP"] == 0.0


def test_trained_detector_round_trips_through_its_file(trained_detector, coco_synth):
    model, cfg, path = trained_detector
    loaded, saved_cfg = load_detector(path)
    assert saved_cfg.architecture == "fcos_small"
    image = cv2.cvtColor(
        read_image_bgr(next((coco_synth / "val2017").iterdir())), cv2.COLOR_BGR2RGB
    )
    loose = cfg.model_copy(update={"score_threshold": 0.0})
    (a_boxes, a_scores), (b_boxes, b_scores) = detect(model, [image], loose) + detect(
        loaded, [image], loose
    )
    np.testing.assert_allclose(a_boxes, b_boxes, atol=1e-4)
    np.testing.assert_allclose(a_scores, b_scores, atol=1e-6)
    by_config = build_detector(cfg.model_copy(update={"weights": str(path)}))
    assert isinstance(by_config, type(model))
    with pytest.raises(DetectorError, match="holds a fcos_small"):
        build_detector(
            cfg.model_copy(update={"weights": str(path), "architecture": "retinanet_small"})
        )
    metrics, results = evaluate_detector(model, cfg, coco_synth)
    assert 0.0 <= metrics["box_AP"] <= 1.0
    assert all(r["category_id"] == 1 and 0 <= r["score"] <= 1 for r in results)


def test_not_a_detector_file_is_refused(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(DetectorError, match="not a detector file"):
        load_detector(bad)
    with pytest.raises(DetectorError, match="not found"):
        load_detector(tmp_path / "missing.pt")


def _mode_variants(source, tmp_path):
    """The same photo as L, LA, RGBA, P and 16-bit PNGs and a CMYK JPEG."""
    rgb = Image.open(source).convert("RGB")
    yield source
    for mode in ("L", "LA", "RGBA", "P"):
        path = tmp_path / f"{source.stem}_{mode}.png"
        rgb.convert(mode).save(path)
        yield path
    deep = tmp_path / f"{source.stem}_16bit.png"
    cv2.imwrite(str(deep), (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    yield deep
    cmyk = tmp_path / f"{source.stem}_cmyk.jpg"
    rgb.convert("CMYK").save(cmyk)
    yield cmyk


def test_real_photos_of_every_mode_give_boxes_inside_them(trained_detector, tmp_path):
    model, cfg, _ = trained_detector
    loose = cfg.model_copy(update={"score_threshold": 0.0, "max_persons": 5})
    sources = sorted(REAL_IMAGES.glob("*.jpg"))[:2] + sorted(COCO_IMAGES.glob("*.jpg"))[:1]
    found = 0
    for source in sources:
        for path in _mode_variants(source, tmp_path):
            image = cv2.cvtColor(read_image_bgr(path), cv2.COLOR_BGR2RGB)
            height, width = image.shape[:2]
            ((boxes, scores),) = detect(model, [image], loose)
            assert len(boxes) <= 5
            assert ((scores >= 0) & (scores <= 1)).all() and (np.diff(scores) <= 0).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
            assert (boxes[:, 0] + boxes[:, 2] <= width + 1e-3).all()
            assert (boxes[:, 1] + boxes[:, 3] <= height + 1e-3).all()
            found += len(boxes)
    assert found > 0


def test_detector_input_must_be_an_rgb_uint8_image():
    cfg = DetectorConfig(architecture="fcos_small", weights=None)
    model = build_detector(cfg).eval()
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        detect(model, [np.zeros((20, 30), np.uint8)], cfg)
    assert detect(model, [], cfg) == []


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_detector_trains_under_the_configured_autocast(coco_synth, monkeypatch, amp):
    """detector.amp bf16 runs the training forward's convolutions in bf16 (on a CPU with
    bf16 instructions; cpu_has_bf16 is forced here) and off keeps them in float32."""
    from ihl import device
    from ihl.detection import train as detection_train

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    dtypes = []
    build = detection_train.build_detector

    def recording(cfg):
        model = build(cfg)
        model.backbone.body.conv1.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        return model

    monkeypatch.setattr(detection_train, "build_detector", recording)
    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=64, max_size=96, epochs=1,
        batch_size=8, amp=amp,
    )  # fmt: skip
    model = detection_train.train_detector(cfg, coco_synth, log=lambda _: None)
    assert set(dtypes) == {torch.bfloat16 if amp == "bf16" else torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
