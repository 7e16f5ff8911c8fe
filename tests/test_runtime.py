"""ONNX export and ONNX Runtime against eager PyTorch; the flip test as one forward."""

from __future__ import annotations

import pytest
import torch

from ihl import config
from ihl.data.keypoints import COCO
from ihl.inference import OUTPUTS, predict_crops, unflip_maps
from ihl.models.heads import argmax_refined
from ihl.models.pose import build_model
from ihl.runtime import OnnxPoseModel, export_onnx

FLIP = list(COCO.flip_index)


@pytest.mark.parametrize("head", ["ihl", "heatmap"])
def test_onnx_runtime_agrees_with_eager_at_any_batch(head, tmp_path):
    cfg = config.load("sample", {"model.head": head, "test.flip": True})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = export_onnx(model, tmp_path / "pose.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["pose.onnx"]
    onnx_model = OnnxPoseModel(path, cfg.model)
    for batch in (1, 5):
        images = torch.randint(0, 256, (batch, 3, 96, 64), dtype=torch.uint8)
        with torch.no_grad():
            eager = model(images)
        ort = onnx_model(images)
        assert tuple(ort) == OUTPUTS[head]
        for name, value in ort.items():
            assert value.shape == eager[name].shape
            torch.testing.assert_close(value, eager[name], atol=1e-4, rtol=1e-4)
        a = predict_crops(model, images, cfg.test, FLIP)
        b = predict_crops(onnx_model, images, cfg.test, FLIP)
        assert (a.coords - b.coords).abs().max() < 1e-4
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)


def test_onnx_model_of_another_head_is_refused(tmp_path):
    cfg = config.load("sample")
    path = export_onnx(build_model(cfg.model).eval(), tmp_path / "pose.onnx")
    heatmap = cfg.model.model_copy(update={"head": "heatmap"})
    with pytest.raises(ValueError, match="not those of a heatmap head"):
        OnnxPoseModel(path, heatmap)


def test_flip_test_is_one_forward_equal_to_two(monkeypatch):
    cfg = config.load("sample", {"model.head": "heatmap", "test.flip": True})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    images = torch.randint(0, 256, (3, 3, 96, 64), dtype=torch.uint8)
    with torch.no_grad():
        maps = model(images)["maps"]
        mirrored = model(images.flip(-1))["maps"]
    expected, _ = argmax_refined((maps + unflip_maps(mirrored, FLIP, True)) / 2)
    batches = []
    model.register_forward_hook(lambda _m, args, _o: batches.append(len(args[0])))
    pred = predict_crops(model, images, cfg.test, FLIP)
    assert batches == [6]
    torch.testing.assert_close(pred.coords, expected)
