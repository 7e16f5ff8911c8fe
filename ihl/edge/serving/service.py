"""The pose service behind TorchServe's handler: rows in, one JSON answer per row out.

A row is one request (or, under KServe's envelope, one instance of a request); the forms
are read by ``ihl.edge.serving.reading``. Without boxes the archive's person detector
finds the persons, or, in an archive without one, the whole image is one person box;
``"boxes": []`` means nobody. Every crop of every request in a TorchServe batch goes
through the network together. A request that cannot be served gets its own status and a
JSON error while the others in its batch are answered normally: if the detector or the
forward pass of a batch fails, each request is retried alone so that only the one at
fault fails. What is kept of a refused request is its status and message (a ``Refusal``),
so its images are freed as soon as it is refused.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ihl.detection.detect import detect
from ihl.edge.serving.images import Opened, decode_image, open_image
from ihl.edge.serving.limits import admit, cap_crops, check_instances, read_limits
from ihl.edge.serving.reading import Refusal, RequestError, parse_boxes, read_request
from ihl.predict import predict_images

log = logging.getLogger(__name__)


class Item:
    """One image to predict: its opened (not yet decoded) image, size, boxes and scores."""

    def __init__(self, opened: Opened, boxes, scores):
        self.opened: Opened | None = opened
        self.width, self.height = opened.width, opened.height
        self.boxes, self.scores = boxes, scores
        self.pixels = opened.width * opened.height
        self.crops = 1 if boxes is None else len(boxes)
        self.rgb: np.ndarray | None = None  # decoded once the request is admitted


def read_item(row: Any, limits: dict[str, int]) -> Item:
    """One row (a request, or a KServe instance) -> its Item, from headers and boxes only."""
    image_bytes, boxes, box_format = read_request(row)
    opened = open_image(image_bytes, limits["max_pixels"], limits["max_aspect_ratio"])
    return Item(
        opened, *parse_boxes(boxes, box_format, opened.width, opened.height, limits["max_boxes"])
    )


def finite(value: Any) -> bool:
    """Whether a JSON-able answer holds only finite numbers (json.dumps would write NaN)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def crop_rate(model: torch.nn.Module, cfg: Any, crops: int = 4, precision: str = "fp32") -> float:
    """Crops per second of this model on this worker at ``precision`` (test-time flip
    included): one warm-up pass, then ``crops`` crops timed in one forward pass."""
    width, height = cfg.model.input_size
    image = np.zeros((height, width, 3), np.uint8)
    boxes = [[0, 0, width, height]] * crops
    with torch.inference_mode():
        predict_images(model, cfg, [image], [None], [None], precision=precision)
        start = time.perf_counter()
        predict_images(model, cfg, [image], [boxes], [None], precision=precision)
    return crops / (time.perf_counter() - start)


def _guarded(what: str, step, *args) -> Any:
    """``step(*args)``, or a Refusal: a RequestError's status, any other failure's 500."""
    try:
        return step(*args)
    except RequestError as err:
        return Refusal.of(err)
    except Exception as err:  # a decoder's or a model's surprise must not fail the batch
        log.exception("%s failed", what)
        return Refusal(500, f"{what} failed on this request: {type(err).__name__}")


class PoseService:
    """IHL keypoints for a batch of rows; see the module docstring."""

    def __init__(
        self,
        model: Any,
        cfg: Any,
        limits: dict[str, int],
        header: dict[str, Any],
        model_info: dict[str, str],
        detector: tuple[Any, Any] | None = None,
        precision: str = "fp32",
    ):
        self.model, self.cfg, self.limits = model, cfg, limits
        self.header, self.model_info = header, model_info
        self.detector, self.precision = detector, precision

    @classmethod
    def from_archive(
        cls, model_dir: Path, manifest: dict, yaml_config: dict, gpu_id: int | None = None
    ) -> PoseService:
        """The service an unpacked archive describes, on ``gpu_id`` (None: the CPU), its
        crop limits lowered to what this worker runs in half of ``responseTimeout``."""
        from ihl.checkpoint import load_model
        from ihl.detection.models import load_detector
        from ihl.device import resolve_device
        from ihl.inference import check_precision

        # TorchServe hands out a gpu_id when it sees GPUs: one that CUDA cannot use fails the
        # worker with the driver versions instead of serving on the CPU.
        device = resolve_device("cpu" if gpu_id is None else f"cuda:{gpu_id}")
        settings = dict(yaml_config.get("handler") or {})
        precision = str(settings.pop("precision", "fp32"))
        limits = read_limits(settings)
        model, cfg = load_model(model_dir / manifest["model"]["serializedFile"])
        model.to(device).eval()
        runtime = "torch"
        if (model_dir / "pose.onnx").is_file() and device.type == "cpu":
            from ihl.runtime import OnnxPoseModel

            model, runtime = OnnxPoseModel(model_dir / "pose.onnx", cfg.model), "onnx"
        # fp16 on a CPU worker, or reduced precision under ONNX Runtime, fails the worker here
        check_precision(precision, device, runtime)
        detector = None
        if (model_dir / "detector.onnx").is_file() and device.type == "cpu":
            from ihl.detection.onnx import OnnxDetector

            onnx_detector = OnnxDetector(model_dir / "detector.onnx")
            detector = (onnx_detector, onnx_detector.cfg)
        elif (model_dir / "detector.pt").is_file():
            detector_model, detector_cfg = load_detector(model_dir / "detector.pt")
            detector = (detector_model.to(device), detector_cfg)
        rate = crop_rate(model, cfg, precision=precision)
        cap_crops(limits, rate, float(yaml_config.get("responseTimeout", 120)))
        log.info("%.1f crops/s on %s in %s: limits %s", rate, device, precision, limits)
        joints = json.loads((model_dir / "keypoints.json").read_text())
        return cls(
            model,
            cfg,
            limits,
            header={"keypoint_names": joints["keypoint_names"], "skeleton": joints["skeleton"]},
            model_info={
                "name": manifest["model"]["modelName"],
                "version": manifest["model"].get("modelVersion", ""),
            },
            detector=detector,
            precision=precision,
        )

    def handle(self, rows: list, context: Any) -> list[dict]:
        """TorchServe's rows -> one answer per row, statuses set on ``context``. Under a
        request envelope (KServe v1) the rows are one request's instances."""
        envelope = len(context.request_processor or []) != len(rows)
        groups = [rows] if envelope else [[row] for row in rows]
        with torch.inference_mode():
            requests = self._predict(self._decode(admit(self._read(groups), self.limits)))
        answers = []
        for group, result in zip(groups, requests, strict=True):
            answers += [result] * len(group) if isinstance(result, Refusal) else result
        return self._answer(answers, context, envelope)

    def _read(self, groups: list[list]) -> list:
        def read(rows):
            check_instances(len(rows), self.limits)
            return [read_item(row, self.limits) for row in rows]

        return [_guarded("the request reader", read, rows) for rows in groups]

    def _decode(self, requests: list) -> list:
        def decode(items):
            for item in items:
                item.rgb, item.opened = decode_image(item.opened), None
            return items

        return [
            r if isinstance(r, Refusal) else _guarded("the image decoder", decode, r)
            for r in requests
        ]

    def _detect(self, requests: list) -> list:
        """Items without boxes get the detector's persons (at most ``max_boxes``, best first),
        all their images in one forward; if that fails, each request alone. Then the crop
        limits are checked again, counting the persons found."""
        if self.detector is None:
            return requests
        model, cfg = self.detector

        def find(items):
            unboxed = [item for item in items if item.boxes is None]
            found = detect(model, [item.rgb for item in unboxed], cfg) if unboxed else []
            keep = self.limits["max_boxes"]
            for item, (boxes, scores) in zip(unboxed, found, strict=True):
                item.boxes, item.scores, item.crops = boxes[:keep], scores[:keep], len(boxes[:keep])
            return items

        valid = [r for r in requests if not isinstance(r, Refusal)]
        if isinstance(_guarded("the detector", find, [i for r in valid for i in r]), Refusal):
            requests = [r if isinstance(r, Refusal) else _guarded("the detector", find, r)
                        for r in requests]  # fmt: skip
        return admit(requests, self.limits, detected=True)

    def _forward(self, items: list[Item]) -> list[list[dict]]:
        return predict_images(
            self.model,
            self.cfg,
            [item.rgb for item in items],
            [item.boxes for item in items],
            [item.scores for item in items],
            batch_size=self.limits["crops_per_forward"],
            precision=self.precision,
        )

    def _predict(self, requests: list) -> list:
        """All crops of the batch's admitted requests through the network together; after a
        failed pass, each request alone, so that only the one at fault fails."""
        start = time.perf_counter()
        requests = self._detect(requests)
        detected = time.perf_counter()
        valid = [r for r in requests if not isinstance(r, Refusal)]
        people = _guarded("the model", self._forward, [i for r in valid for i in r])
        if isinstance(people, Refusal):
            results = [_guarded("the model", self._forward, r) for r in valid]
        else:
            people = iter(people)
            results = [[next(people) for _ in r] for r in valid]
        log.info(
            "batch of %d requests (%d refused): detect %.1f ms, %d crops in %.1f ms",
            len(requests), len(requests) - len(valid), 1000 * (detected - start),
            sum(i.crops for r in valid for i in r), 1000 * (time.perf_counter() - detected),
        )  # fmt: skip
        results = iter(results)
        return [r if isinstance(r, Refusal) else next(results) for r in requests]

    def _answer(self, answers: list, context: Any, envelope: bool) -> list[dict]:
        out = []
        for idx, result in enumerate(answers):
            if idx < len(context.request_processor or []):
                context.set_response_content_type(idx, "application/json")
            if not isinstance(result, Refusal):
                body = {"persons": result, **self.header, "model": self.model_info}
                if finite(body):
                    out.append(body)
                    continue
                result = Refusal(500, "the model gave non-finite keypoints for this request")
            phrase = HTTPStatus(result.status).phrase
            if envelope:  # a bad instance fails its whole request
                context.set_all_response_status(result.status, phrase)
            else:
                context.set_response_status(result.status, phrase, idx)
            out.append({"code": result.status, "error": result.message})
        return out
