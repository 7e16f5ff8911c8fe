"""The whole pipeline through kfp.local on a tiny synthetic set, registering into moto's S3."""

from __future__ import annotations

import base64
import json
import math
import re
import zipfile
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest

OVERRIDES = {
    "model.input_size": [64, 64],
    "model.deconv_channels": 32,
    "train.batch_size": 8,
    "train.warmup_iters": 1,
    "train.lr_steps": [1],
    "loss.wasserstein": "none",
    "detector.epochs": 1,
    "detector.min_size": 96,
}
TINY = (
    "--epochs",
    "1",
    *(x for k, v in OVERRIDES.items() for x in ("--set", f"{k}={json.dumps(v)}")),
)
MAR_ENTRIES = {
    "model.pt", "config.yaml", "keypoints.json", "model_card.md", "model_card.json",
    "ihl_handler.py", "model-config.yaml", "MAR-INF/MANIFEST.json", "detector.pt",
}  # fmt: skip


@pytest.fixture(scope="module")
def s3_registry(s3_server):
    """The session's S3 endpoint with a bucket for this module; yields its environment variables."""
    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    s3.create_bucket(Bucket="models")
    return env


@pytest.fixture(scope="module")
def local_run(cli, s3_registry, tmp_path_factory):
    """One run-local of the whole pipeline: (its output folder, the CLI result)."""
    out = tmp_path_factory.mktemp("run-local")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_registry.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        result = cli(
            "pipeline", "run-local", "-o", out, "--synth-train", "8", "--synth-val", "3",
            "--registry-uri", "s3://models/pose", "--model-version", "7", *TINY,
        )  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    return out, result


def _printed(result, label: str) -> Path:
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith(f"{label}:")]
    return Path(line.split(":", 1)[1].strip())


def test_metrics_written_and_logged_for_the_ui(local_run):
    out, result = local_run
    metrics = json.loads(_printed(result, "metrics").read_text())
    assert {"AP", "AP50", "AP75", "AR"} <= set(metrics)
    assert all(0 <= v <= 1 for v in metrics.values() if v is not None and math.isfinite(v))
    (executor_output,) = out.glob("tasks/*/evaluate/executor_output.json")
    logged = json.loads(executor_output.read_text())["artifacts"]["metrics"]["artifacts"][0]
    assert logged["metadata"]["AP"] == metrics["AP"]


def test_model_archive_is_a_complete_mar(local_run):
    _, result = local_run
    archive = _printed(result, "model")
    assert archive.name == "ihl.mar"
    with zipfile.ZipFile(archive) as mar:
        assert MAR_ENTRIES <= set(mar.namelist())
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        card = mar.read("model_card.md").decode()
    assert manifest["model"]["modelName"] == "ihl" and manifest["model"]["modelVersion"] == "7"
    assert "synth-" in card  # the data version: the prepared dataset's fingerprint
    assert (archive.parents[1] / "config" / "config.properties").is_file()


def test_report_shows_predicted_skeletons(local_run):
    _, result = local_run
    page = _printed(result, "report").read_text()
    assert "<td>AP</td>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # one per validation image
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(images[0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[2] == 3


def _output_artifact(out: Path, task: str, name: str) -> dict:
    (path,) = out.glob(f"tasks/*/{task}/executor_output.json")
    return json.loads(path.read_text())["artifacts"][name]["artifacts"][0]


def test_images_stay_on_the_volume(local_run):
    out, _ = local_run
    prepared = _output_artifact(out, "prepare", "prepared")
    assert [p.name for p in Path(prepared["uri"]).iterdir()] == ["index.json"]
    assert prepared["metadata"]["root"] == str(out / "volume" / "synth")
    assert len(list((out / "volume" / "synth" / "train2017").glob("*.jpg"))) == 8


def test_a_retried_train_task_resumes_its_run_folder(local_run, tmp_path):
    """The same inputs again (as a retry or a re-run would pass them) find the finished run:
    nothing is trained again and the same best checkpoint comes out."""
    from kfp.dsl import Dataset, Model

    from components import train
    from ihl.edge.container_images import image

    out, _ = local_run
    prepared = _output_artifact(out, "prepare", "prepared")
    trained = _output_artifact(out, "train", "model")
    latest = Path(trained["metadata"]["run_dir"]) / "checkpoints" / "latest.pt"
    stamp = latest.stat().st_mtime_ns
    model = Model(name="model", uri=str(tmp_path / "model"), metadata={})
    train.python_func(
        prepared=Dataset(name="prepared", uri=prepared["uri"], metadata=prepared["metadata"]),
        preset="sample", epochs=1, num_gpus=0, overrides=OVERRIDES, volume=str(out / "volume"),
        image=image("train"), model=model,
    )  # fmt: skip
    assert model.metadata["run_dir"] == trained["metadata"]["run_dir"]
    assert latest.stat().st_mtime_ns == stamp
    assert (tmp_path / "model").read_bytes() == Path(trained["uri"]).read_bytes()


def test_registered_in_s3(local_run, s3_registry, monkeypatch):
    _, result = local_run
    for key, value in s3_registry.items():
        monkeypatch.setenv(key, value)
    from ihl.edge.registry.store import list_versions

    assert "registered: s3://models/pose/ihl/7" in result.output
    assert [v["version"] for v in list_versions("s3://models/pose", "ihl")] == ["7"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dataset", "imagenet"), "unknown dataset 'imagenet'"),
        (("--preset", "nope"), "unknown preset 'nope'"),
        (("--data-source", "ftp"), "unknown data source 'ftp'"),
        (("--data-source", "dvc"), "needs a git repository"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(cli, tmp_path, args, message):
    result = cli("pipeline", "run-local", "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()
