"""Reduced-precision inference (``precision`` bf16/fp16): autocast really runs, coordinates stay
close to fp32, and what cannot run here is refused before any work."""

from __future__ import annotations

import json

import pytest
import torch

from ihl import config
from ihl.checkpoint import save_model
from ihl.evaluate import evaluate
from ihl.inference import PrecisionError, predict_crops
from ihl.models import build_model

SIZE = [64, 64]


@pytest.fixture(scope="module")
def model_cfg():
    torch.manual_seed(0)
    cfg = config.load("sample", {"model.input_size": SIZE})
    return build_model(cfg.model).eval(), cfg


def _conv_dtypes(model) -> list[torch.dtype]:
    """The output dtypes of the model's first convolution, one per forward."""
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_bf16_runs_the_convolutions_in_bf16_and_keeps_coordinates_close(model_cfg):
    model, cfg = model_cfg
    seen = _conv_dtypes(model)
    crops = torch.randint(0, 256, (4, 3, SIZE[1], SIZE[0]), dtype=torch.uint8)
    test = cfg.test.model_copy(update={"flip": True})
    flip = list(range(17))
    full = predict_crops(model, crops, test, flip)
    half = predict_crops(model, crops, test, flip, "bf16")
    assert seen == [torch.float32, torch.bfloat16]
    assert half.coords.dtype == torch.float32 and half.sigma.dtype == torch.float32
    assert not torch.equal(full.coords, half.coords)  # autocast changed the arithmetic
    # within 1% of the crop: bf16 keeps 8 bits of mantissa through the network
    torch.testing.assert_close(half.coords, full.coords, rtol=0, atol=0.01)
    torch.testing.assert_close(half.scores, full.scores, rtol=0, atol=0.05)


def test_fp16_on_the_cpu_is_refused_naming_the_option(model_cfg):
    model, cfg = model_cfg
    crops = torch.zeros(1, 3, SIZE[1], SIZE[0], dtype=torch.uint8)
    with pytest.raises(PrecisionError, match="precision 'fp16' needs a CUDA device.*bf16"):
        predict_crops(model, crops, cfg.test, list(range(17)), "fp16")
    with pytest.raises(PrecisionError, match="'fp8': expected one of fp32, bf16, fp16"):
        predict_crops(model, crops, cfg.test, list(range(17)), "fp8")


@pytest.fixture(scope="module")
def synth_checkpoint(coco_synth, tmp_path_factory):
    torch.manual_seed(0)
    cfg = config.load("sample", {"model.input_size": SIZE, "data.root": str(coco_synth)})
    ckpt = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_model(ckpt, build_model(cfg.model), cfg), coco_synth


def test_evaluate_in_bf16_on_the_cpu_scores_like_fp32(synth_checkpoint, tmp_path):
    ckpt, root = synth_checkpoint
    common = {"data_root": root, "boxes": "gt", "device": "cpu", "progress": False}
    evaluate(ckpt, tmp_path / "fp32", **common)
    evaluate(ckpt, tmp_path / "bf16", precision="bf16", **common)
    full, half = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("fp32", "bf16"))
    assert len(full) == len(half) > 0
    diff = max(
        abs(a - b)
        for x, y in zip(full, half, strict=True)
        for a, b in zip(x["keypoints"], y["keypoints"], strict=True)
    )
    assert 0 < diff < 3.0  # pixels of a 160x120 image: reduced, and close


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16", "device": "cpu"}, "'fp16' needs a CUDA device"),
        ({"precision": "bf16", "runtime": "onnx"}, "runtime 'onnx'.*fp32 only"),
    ],
)
def test_evaluate_refuses_what_cannot_run_before_any_work(
    synth_checkpoint, tmp_path, kwargs, message
):
    ckpt, root = synth_checkpoint
    with pytest.raises(PrecisionError, match=message):
        evaluate(ckpt, tmp_path / "out", data_root=root, boxes="gt", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_names_the_option(cli, synth_checkpoint, tmp_path):
    ckpt, root = synth_checkpoint
    result = cli(
        "evaluate",
        ckpt,
        "-o",
        tmp_path / "e",
        "--data-root",
        root,
        "--precision",
        "fp16",
        "--device",
        "cpu",
    )
    assert result.exit_code == 2 and "--precision bf16" in result.output
    image = sorted((root / "val2017").iterdir())[0]
    result = cli(
        "predict", ckpt, image, "-o", tmp_path / "p", "--whole-image", "--runtime", "onnx",
        "--precision", "bf16",
    )  # fmt: skip
    assert result.exit_code == 2 and "runtime 'onnx'" in result.output
    result = cli(
        "predict", ckpt, image, "-o", tmp_path / "p", "--whole-image", "--precision", "bf16"
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "predictions.json").read_text())
    result = cli("export", ckpt, "-o", tmp_path / "x", "--runtime", "onnx", "--precision", "bf16")
    assert result.exit_code == 2 and "fp32 only" in result.output
    assert not (tmp_path / "x").exists()
