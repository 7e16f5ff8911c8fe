"""The handler in the precision its archive records (``ihl export --precision``), and the
persons its detector finds counted against the crop limits like given boxes.

Services are built in-process from an unpacked archive, as TorchServe's handler builds
them, and called through ``serving.calls``.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
import yaml
from serving.calls import call, instance, noise_png, png

from ihl.edge.export import ExportError, export_model
from ihl.edge.serving.service import PoseService
from ihl.inference import PrecisionError


def _unpack(export_dir, tmp_path):
    """The archive's files in a folder, as TorchServe unpacks them for a worker."""
    with zipfile.ZipFile(export_dir / "model-store" / "ihl.mar") as mar:
        mar.extractall(tmp_path)
    return tmp_path


def _initialised(model_dir):
    return PoseService.from_archive(
        model_dir,
        json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text()),
        yaml.safe_load((model_dir / "model-config.yaml").read_text()),
    )


@pytest.fixture(scope="module")
def bf16_export(serving_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16") / "export"
    export_model(serving_checkpoint, out, name="ihl", version="1", precision="bf16")
    return out


def _archived(export_dir, name: str) -> bytes:
    return zipfile.ZipFile(export_dir / "model-store" / "ihl.mar").read(name)


def test_export_records_the_precision(bf16_export, export_dir):
    assert json.loads(_archived(bf16_export, "model_card.json"))["precision"] == "bf16"
    assert (
        yaml.safe_load(_archived(bf16_export, "model-config.yaml"))["handler"]["precision"]
        == "bf16"
    )
    assert "| precision | bf16 |" in (bf16_export / "model_card.md").read_text()
    assert "| precision | fp32 |" in (export_dir / "model_card.md").read_text()


def test_the_handler_runs_the_recorded_precision(bf16_export, export_dir, tmp_path):
    half = _initialised(_unpack(bf16_export, tmp_path / "bf16"))
    full = _initialised(_unpack(export_dir, tmp_path / "fp32"))
    assert (half.precision, full.precision) == ("bf16", "fp32")
    assert half.model_info["version"] == "1"
    seen = []
    conv = next(m for m in half.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    row = instance(noise_png(0, (96, 80)), [[5, 5, 60, 80]])
    (a,), _ = call(half, [row])
    (b,), _ = call(full, [row])
    assert seen and set(seen) == {torch.bfloat16}
    pa, pb = np.array(a["persons"][0]["keypoints"]), np.array(b["persons"][0]["keypoints"])
    assert not np.array_equal(pa, pb)
    np.testing.assert_allclose(pa[:, :2], pb[:, :2], atol=2.0)  # pixels of a 60x80 box


def test_an_fp16_archive_fails_a_cpu_worker_at_load(serving_checkpoint, tmp_path):
    export_model(serving_checkpoint, tmp_path / "export", name="ihl", version="1", precision="fp16")
    config = yaml.safe_load(_archived(tmp_path / "export", "model-config.yaml"))
    assert config["handler"]["precision"] == "fp16"
    with pytest.raises(PrecisionError, match="'fp16' needs a CUDA device"):
        _initialised(_unpack(tmp_path / "export", tmp_path / "unpacked"))


def test_onnx_archives_are_fp32_only(serving_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="runtime 'onnx'.*fp32 only"):
        export_model(serving_checkpoint, tmp_path / "x", runtime="onnx", precision="bf16")
    assert not (tmp_path / "x").exists()


def test_detected_persons_count_against_the_batch_crop_limit(detecting):
    rows = [instance(noise_png(1)), instance(noise_png(2))]
    answers, statuses = call(detecting, rows)
    assert len(answers[0]["persons"]) == 6
    assert statuses == [200, 429]  # 6 + 5 detected crops > max_batch_crops 8
    assert "max_batch_crops" in answers[1]["error"]


def test_detected_persons_count_against_a_requests_max_boxes(detecting):
    rows = [instance(noise_png(1)), instance(noise_png(2))]
    answers, statuses = call(detecting, rows, requests=1)  # one KServe request
    assert statuses == [400]
    assert "crops (with the persons the detector found) in one request" in answers[0]["error"]
    assert "at most 6 (max_boxes)" in answers[0]["error"]
    # a given box and a detected image fit together: 1 + 6 <= 8
    rows = [instance(png(64, 64), [[0, 0, 10, 10]]), instance(noise_png(1))]
    answers, statuses = call(detecting, rows)
    assert statuses == [200, 200] and [len(a["persons"]) for a in answers] == [1, 6]
