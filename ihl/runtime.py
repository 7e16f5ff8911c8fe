"""The pose model in ONNX: export with a dynamic batch, and ONNX Runtime behind the
same call as the eager model, so ``predict_crops`` runs either.

ONNX Runtime fuses the convolutions with their batch norms and activations and plans
its memory once, which makes CPU inference faster than eager PyTorch
(``benchmarks/inference.py``); outputs agree with eager to float tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ihl.config import ModelConfig
from ihl.files import replacing
from ihl.inference import OUTPUTS
from ihl.models.pose import PoseModel

RUNTIMES = ("torch", "onnx")
OPSET = 18


class _InferenceOutputs(nn.Module):
    """The pose model returning only what inference reads, as a tuple (ONNX has no dicts)."""

    def __init__(self, model: PoseModel):
        super().__init__()
        self.model, self.names = model, OUTPUTS[model.cfg.head]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return tuple(out[name] for name in self.names)


def export_onnx(model: PoseModel, path: str | Path) -> Path:
    """Write ``model`` as ONNX: float32 RGB crops in 0..255 (batch, 3, height, width), any
    batch size, to its head's ``OUTPUTS``. Written beside the target, then renamed."""
    width, height = model.cfg.input_size
    wrapper = _InferenceOutputs(model).eval()
    example = torch.zeros(2, 3, height, width)
    with replacing(path) as handle:
        torch.onnx.export(
            wrapper,
            (example,),
            handle,
            input_names=["images"],
            output_names=list(wrapper.names),
            dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in wrapper.names}},
            opset_version=OPSET,
            dynamo=False,
        )
    return Path(path)


def cpu_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime session of ``path`` on the CPU, every graph optimisation on, with
    ``threads`` (default: torch's) intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxPoseModel(nn.Module):
    """An exported pose model run by ONNX Runtime; called like a PoseModel on a crop batch
    (uint8 or float, on the CPU), it returns the ``OUTPUTS`` of its head as tensors. A
    module without parameters, so that code written for PoseModel (eval, to) runs it."""

    def __init__(self, path: str | Path, cfg: ModelConfig, threads: int | None = None):
        super().__init__()
        self.session = cpu_session(path, threads)
        self.cfg = cfg
        self.names = [o.name for o in self.session.get_outputs()]
        if tuple(self.names) != OUTPUTS[cfg.head]:
            raise ValueError(
                f"{path}: outputs {self.names} are not those of a {cfg.head} head "
                f"{list(OUTPUTS[cfg.head])}"
            )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        feed = images.detach().cpu().float().numpy()
        values = self.session.run(self.names, {"images": np.ascontiguousarray(feed)})
        return {n: torch.from_numpy(v) for n, v in zip(self.names, values, strict=True)}
