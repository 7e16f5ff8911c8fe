"""The person detector in ONNX: export with a dynamic image size, and ONNX Runtime behind
the same call as the eager torchvision model, so ``detect`` (and ``select_persons``)
run either.

The exported graph takes one float RGB image in [0, 1] of any height and width and
gives the model's raw boxes (x0, y0, x1, y1 in image pixels), scores and labels:
torchvision's own resizing, normalisation, anchors, decoding and NMS are traced into it.
A batch of images is one run per image. The detector's config travels in the file's
metadata, so a ``detector.onnx`` alone is a working detector.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ihl.config import DetectorConfig
from ihl.detection.models import DetectorError
from ihl.files import write_bytes
from ihl.runtime import OPSET, cpu_session

FORMAT = "ihl-detector-onnx-1"
"""Marks a detector exported by ``export_detector`` (the ``format`` metadata entry)."""
INPUT = "image"
OUTPUTS = ("boxes", "scores", "labels")
NOT_EXPORTABLE = {
    "fasterrcnn_resnet50_fpn_v2": "it exports, but ONNX Runtime fails at a Reshape of its RoI "
    "heads on real photos (docs/inference.md)",
}


def check_exportable(architecture: str) -> None:
    """Refuse, before any work, an architecture whose export does not run."""
    if architecture in NOT_EXPORTABLE:
        raise DetectorError(
            f"detector {architecture} cannot run under ONNX Runtime: "
            f"{NOT_EXPORTABLE[architecture]}; use runtime torch or another architecture"
        )


class _OneImage(nn.Module):
    """A torchvision detector on one 3 x H x W image, its output dict as a tuple."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (out,) = self.model([image])
        return out["boxes"], out["scores"], out["labels"]


def export_detector(model: nn.Module, cfg: DetectorConfig, path: str | Path) -> Path:
    """Write ``model`` (its config ``cfg``) as ONNX with a dynamic image height and width
    and the config in its metadata. Written beside the target, then renamed."""
    import onnx

    check_exportable(cfg.architecture)
    example = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0))
    traced = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # tracing torchvision's transform warns of sizes it records as constants: they
        # are the example's and the exported resize computes its own (the tests check)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
        torch.onnx.export(
            _OneImage(model.cpu()).eval(),
            (example,),
            traced,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {1: "height", 2: "width"}, **{n: {0: "n"} for n in OUTPUTS}},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load_from_string(traced.getvalue())
    meta = {"format": FORMAT, "config": json.dumps(cfg.model_dump(mode="json"))}
    onnx.helper.set_model_props(graph, meta)
    return write_bytes(path, graph.SerializeToString())


class OnnxDetector(nn.Module):
    """An exported detector run by ONNX Runtime on the CPU; called like the torchvision
    model on a list of 3 x H x W float images in [0, 1], it returns one dict of ``boxes``,
    ``scores`` and ``labels`` per image. ``cfg`` is the config it was exported with. A
    module without parameters, so code written for the eager model (eval, to) runs it."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        if not Path(path).is_file():
            raise DetectorError(f"ONNX detector file not found: {path}")
        try:
            self.session = cpu_session(path, threads)
        except Exception as err:  # ORT raises its own exception types for unreadable graphs
            raise DetectorError(f"{path}: not a readable ONNX model ({err})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise DetectorError(
                f"{path}: not a detector exported by ihl (format {meta.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != [INPUT] or outputs != OUTPUTS:
            raise DetectorError(
                f"{path}: inputs {inputs} and outputs {list(outputs)} are not a detector's "
                f"({[INPUT]} to {list(OUTPUTS)})"
            )
        try:
            self.cfg = DetectorConfig.model_validate(json.loads(meta["config"]))
        except (KeyError, ValueError) as err:
            raise DetectorError(f"{path}: its detector config does not validate: {err}") from None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        found = []
        for image in images:
            feed = image.detach().cpu().float().contiguous().numpy()
            values = self.session.run(list(OUTPUTS), {INPUT: feed})
            found.append({n: torch.from_numpy(v) for n, v in zip(OUTPUTS, values, strict=True)})
        return found


def onnx_detector(
    model: nn.Module, cfg: DetectorConfig, path: str | Path
) -> tuple[OnnxDetector, DetectorConfig]:
    """``model`` exported to ``path`` and run under ONNX Runtime, with its config: what
    ``detector_for`` gives, for the ONNX runtime."""
    detector = OnnxDetector(export_detector(model, cfg, path))
    return detector, detector.cfg
