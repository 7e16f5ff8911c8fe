"""The person detector exported to ONNX: the same persons as eager PyTorch on images of
any size, packed by ``export --runtime onnx`` and run by the handler, and clear errors
for files that are not such a detector."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml

from ihl import config
from ihl.checkpoint import save_model
from ihl.detection.boxap import evaluate_detector
from ihl.detection.detect import detect
from ihl.detection.models import DetectorError, save_detector
from ihl.detection.onnx import OnnxDetector, export_detector, onnx_detector
from ihl.edge.export import export_model
from ihl.models import build_model
from ihl.runtime import export_onnx

REPO = Path(__file__).resolve().parents[2]
BOX_TOLERANCE = 1e-2
"""Pixels: float32 reordering in ONNX Runtime moves a box by ~1e-3 px at most."""
SCORE_TOLERANCE = 1e-5


def _same_detections(a, b, rounding: tuple[float, float] = (0.0, 0.0)) -> None:
    """(boxes, scores) ``a`` and ``b`` hold the same detections, in any order: boxes of near
    equal score may swap places between runtimes. ``rounding``: the (box, score) steps
    the values were rounded to, which a tiny difference can flip."""
    (a_boxes, a_scores), (b_boxes, b_scores) = a, b
    assert len(a_boxes) == len(b_boxes)
    if not len(a_boxes):
        return
    box_gap = np.abs(a_boxes[:, None] - b_boxes[None]).max(-1)
    score_gap = np.abs(a_scores[:, None] - b_scores[None])
    close = (box_gap <= BOX_TOLERANCE + rounding[0]) & (score_gap <= SCORE_TOLERANCE + rounding[1])
    assert close.any(1).all() and close.any(0).all(), (box_gap.min(1).max(), box_gap.min(0).max())


@pytest.fixture(scope="module")
def exported(trained_detector, tmp_path_factory):
    model, cfg, _ = trained_detector
    return onnx_detector(model, cfg, tmp_path_factory.mktemp("onnx") / "detector.onnx")


def _val_images(coco_synth, n=2):
    return [
        cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        for p in sorted((coco_synth / "val2017").iterdir())[:n]
    ]


def test_onnx_detector_finds_what_eager_finds_at_any_image_size(
    trained_detector, exported, coco_synth
):
    model, cfg, _ = trained_detector
    detector, onnx_cfg = exported
    assert onnx_cfg == cfg
    loose = cfg.model_copy(update={"score_threshold": 0.0, "max_persons": 100})
    found = 0
    for image in _val_images(coco_synth):
        # the export traced a 160 x 120 image: other sizes and aspects must resize alike
        for variant in (image, cv2.resize(image, (150, 260)), cv2.resize(image, (400, 90))):
            (eager,) = detect(model, [variant], loose)
            (ort,) = detect(detector, [variant], loose)
            _same_detections(eager, ort)
            found += len(eager[0])
    assert found > 0


def test_onnx_detections_of_a_split_match_eager(trained_detector, exported, coco_synth):
    """The whole val split as box AP sees it (boxes rounded to 0.01 px, scores to 1e-4):
    every detection the same to tolerance, so the AP is the same (the main job's detector:
    docs/inference.md)."""
    model, cfg, _ = trained_detector
    detector, _ = exported
    # every box down to the AP threshold (0.05), not only those the config keeps
    eager, ort = (evaluate_detector(m, cfg, coco_synth)[1] for m in (model, detector))
    assert len(eager) == len(ort) > 0

    def of_image(results, image_id):
        mine = [r for r in results if r["image_id"] == image_id]
        return np.array([r["bbox"] for r in mine]), np.array([r["score"] for r in mine])

    for image_id in {r["image_id"] for r in eager}:
        _same_detections(of_image(eager, image_id), of_image(ort, image_id), (0.01, 1e-4))


def test_not_a_detector_onnx_file_is_refused(trained_detector, tmp_path):
    with pytest.raises(DetectorError, match="not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(DetectorError, match="garbage.onnx: not a readable ONNX model"):
        OnnxDetector(garbage)
    torch.manual_seed(0)
    pose_cfg = config.load("sample", {"model.input_size": [64, 64]})
    pose = export_onnx(build_model(pose_cfg.model).eval(), tmp_path / "pose.onnx")
    with pytest.raises(DetectorError, match="pose.onnx: not a detector exported by ihl"):
        OnnxDetector(pose)
    graph = onnx.load(str(pose))
    model, cfg, _ = trained_detector
    meta = {"format": "ihl-detector-onnx-1", "config": json.dumps(cfg.model_dump(mode="json"))}
    onnx.helper.set_model_props(graph, meta)
    onnx.save(graph, str(tmp_path / "labelled.onnx"))
    with pytest.raises(DetectorError, match=r"inputs \['images'\] .* not a detector's"):
        OnnxDetector(tmp_path / "labelled.onnx")
    bad_cfg = tmp_path / "bad_cfg.onnx"
    graph = onnx.load(str(export_detector(model, cfg, tmp_path / "good.onnx")))
    onnx.helper.set_model_props(graph, {**meta, "config": json.dumps({"max_persons": 0})})
    onnx.save(graph, str(bad_cfg))
    with pytest.raises(DetectorError, match="config does not validate"):
        OnnxDetector(bad_cfg)
    v2 = cfg.model_copy(update={"architecture": "fasterrcnn_resnet50_fpn_v2"})
    with pytest.raises(DetectorError, match="fasterrcnn_resnet50_fpn_v2 cannot run under ONNX"):
        export_detector(model, v2, tmp_path / "v2.onnx")
    assert not (tmp_path / "v2.onnx").exists()


class _Context:
    """TorchServe's context as the handler's inference path uses it, for one request."""

    def __init__(self):
        self.request_processor = [None]
        self.status: dict[int, int] = {}

    def set_response_status(self, code, phrase, idx=0):
        self.status[idx] = code

    def set_all_response_status(self, code, phrase):
        self.status[0] = code

    def set_response_content_type(self, idx, value):
        pass


def _handler_from(archive: Path, unpacked: Path):
    """The archive's handler's service, initialised in-process as TorchServe would after
    unpacking."""
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(unpacked)
    spec = importlib.util.spec_from_file_location("ihl_handler", unpacked / "ihl_handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = SimpleNamespace(
        system_properties={"model_dir": str(unpacked)},
        manifest=json.loads((unpacked / "MAR-INF" / "MANIFEST.json").read_text()),
        model_yaml_config=yaml.safe_load((unpacked / "model-config.yaml").read_text()),
    )
    handler = module.PoseHandler()
    handler.initialize(context)
    return handler.service


def test_onnx_export_packs_the_detector_and_the_handler_runs_it(
    trained_detector, coco_synth, tmp_path
):
    model, cfg, _ = trained_detector
    cfg = cfg.model_copy(update={"score_threshold": 0.05, "max_persons": 5})
    detector_file = save_detector(tmp_path / "detector.pt", model, cfg)
    torch.manual_seed(0)
    pose_cfg = config.load("sample", {"model.input_size": [64, 64]})
    checkpoint = save_model(tmp_path / "model.pt", build_model(pose_cfg.model), pose_cfg)
    archive = export_model(checkpoint, tmp_path / "export", runtime="onnx", detector=detector_file)
    with zipfile.ZipFile(archive) as mar:
        assert {"pose.onnx", "detector.onnx", "detector.pt"} <= set(mar.namelist())
    handler = _handler_from(archive, tmp_path / "unpacked")
    assert isinstance(handler.detector[0], OnnxDetector)
    assert handler.detector[1] == cfg

    path = sorted((coco_synth / "val2017").iterdir())[0]
    answer = handler.handle([{"body": path.read_bytes()}], _Context())
    persons = answer[0]["persons"]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    boxes, scores = detect(model, [image], cfg)[0]
    keep = handler.limits["max_boxes"]
    assert 0 < len(persons) == len(boxes[:keep])
    _same_detections(
        (np.array([p["bbox"] for p in persons]), np.array([p["box_score"] for p in persons])),
        (boxes[:keep], scores[:keep]),
    )
