"""Export a checkpoint for serving: a TorchServe archive, its KServe folder and a model card.

``export_model`` writes, in the registry's (and KServe's storage) layout::

    OUT/model-store/<name>.mar     torch-model-archiver archive (below)
    OUT/config/config.properties   TorchServe config for KServe (serving/kserve.config.properties
                                   plus model_store and a model_snapshot naming the archive)
    OUT/model_card.md              metrics, parameters, data and code versions

The archive is self-describing: ``model.pt`` (weights and full config, loadable
with ``weights_only=True``), ``config.yaml`` (the same config, readable),
``keypoints.json`` (joint names, skeleton, flip pairs, OKS sigmas),
``model_card.md`` and ``model_card.json``, the handler and
``model-config.yaml`` (workers, batching, the handler's limits and the inference
``precision`` its forward runs under). With runtime
``onnx`` it also holds ``pose.onnx``, which the handler then runs under ONNX
Runtime; with a person detector, ``detector.pt``, which finds the persons of a
request without boxes (serving downloads nothing), and with runtime ``onnx`` also
``detector.onnx``, which the handler then runs instead. The handler
and the TorchServe configs live in the repository's ``serving/`` folder
(``IHL_SERVING_DIR`` points elsewhere, e.g. in an image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml

from ihl import config as config_mod
from ihl.checkpoint import load_model, save_model
from ihl.config import DetectorConfig
from ihl.data.keypoints import get_spec
from ihl.detection.models import (
    DetectorError,
    build_detector,
    load_detector,
    save_detector,
)
from ihl.detection.onnx import check_exportable, export_detector
from ihl.edge.names import check_name
from ihl.files import load_json, replacing_folder
from ihl.inference import PrecisionError, check_precision
from ihl.runtime import export_onnx

HANDLER = "ihl_handler.py"
MODEL_CONFIG = "model-config.yaml"
KSERVE_CONFIG = "kserve.config.properties"
KSERVE_MODEL_STORE = "/mnt/models/model-store"


RUNTIMES = ("torch", "onnx")
ONNX_FILE = "pose.onnx"
DETECTOR_FILE = "detector.pt"
DETECTOR_ONNX_FILE = "detector.onnx"


class ExportError(ValueError):
    """The export cannot be made; the message names the input at fault."""


def serving_dir() -> Path:
    """The folder with the handler and TorchServe configs."""
    default = Path(__file__).resolve().parents[2] / "serving"
    path = Path(os.environ.get("IHL_SERVING_DIR") or default)
    missing = [f for f in (HANDLER, MODEL_CONFIG, KSERVE_CONFIG) if not (path / f).is_file()]
    if missing:
        raise ExportError(
            f"serving files {', '.join(missing)} not found in {path}; set IHL_SERVING_DIR to the "
            "repository's serving/ folder"
        )
    return path


def code_version() -> str:
    """The git revision of the code (``+dirty`` with uncommitted changes); without a checkout
    (the container images) the revision the image was built from (``IHL_REVISION``), else the
    package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        built_from = os.environ.get("IHL_REVISION", "unknown")
        return built_from if built_from != "unknown" else f"ihl {package_version('ihl')}"
    return f"{rev}+dirty" if dirty else rev


def _read_metrics(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise ExportError(f"metrics file not found: {path}")
    data = load_json(path, ExportError)
    if not isinstance(data, dict) or not all(
        v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        raise ExportError(f'{path}: expected flat JSON metrics such as {{"AP": 0.71}}')
    return data


def _model_config(workers: int | None, batch_size: int | None, max_batch_delay: int | None):
    settings = yaml.safe_load((serving_dir() / MODEL_CONFIG).read_text())
    for key, value in (("batchSize", batch_size), ("maxBatchDelay", max_batch_delay)):
        if value is not None:
            if value < (1 if key == "batchSize" else 0):
                raise ExportError(f"{key} must be positive, got {value}")
            settings[key] = value
    if workers is not None:
        if workers < 1:
            raise ExportError(f"workers must be at least 1, got {workers}")
        settings["minWorkers"] = settings["maxWorkers"] = workers
    return settings


def _detector(cfg: config_mod.Config, path: Path | None):
    """Where the archive's detector comes from and its config; (None, None) for none: a
    detector file, else the config's detector when it has weights."""
    if path is not None:
        try:
            return str(path), load_detector(path)[1]
        except DetectorError as err:
            raise ExportError(str(err)) from None
    if cfg.detector.weights is None:
        return None, None
    return f"weights {cfg.detector.weights}", cfg.detector


def _pack_detector(cfg: DetectorConfig, path: Path | None, target: Path) -> Path:
    """The detector as a self-contained file in the archive (torchvision weights included)."""
    if path is not None:
        shutil.copyfile(path, target)
        return target
    try:
        return save_detector(target, build_detector(cfg), cfg)
    except (DetectorError, OSError) as err:
        raise ExportError(
            f"cannot get the {cfg.architecture} detector weights {cfg.weights!r} ({err}); pass "
            "--detector FILE"
        ) from None


def _card(info: dict[str, Any]) -> str:
    lines = [
        f"# Model card: {info['name']} {info['version']}",
        "",
        "IHL (Implicit Heatmap Learning) top-down human pose estimator: one person box in, "
        f"{len(info['keypoint_names'])} {info['dataset'].upper()} keypoints out.",
        "",
        "| | |",
        "|---|---|",
        f"| created | {info['created']} |",
        f"| code version | {info['code_version']} |",
        f"| data version | {info['data_version'] or 'not recorded'} |",
        f"| config | {info['config_name']}: {info['backbone']} backbone, {info['head']} head |",
        f"| input (w x h) | {info['input_size'][0]} x {info['input_size'][1]} |",
        f"| parameters | {info['parameters']:,} |",
        f"| flip test | {'on' if info['flip'] else 'off'} |",
        f"| runtime | {info['runtime']} |",
        f"| precision | {info['precision']} |",
        f"| person detector | {info['detector'] or 'none (a request without boxes: one person)'} |",
        f"| source checkpoint | {info['checkpoint']} |",
        f"| ihl / torch | {info['ihl']} / {info['torch']} |",
        "",
        "## Metrics",
        "",
    ]
    if info["metrics"]:
        lines += ["| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {'n/a' if v is None else f'{v:.4f}'} |" for k, v in info["metrics"].items()
        ]
    else:
        lines.append("Not recorded (export without --metrics).")
    serving = info["serving"]
    lines += [
        "",
        "## Serving",
        "",
        f"TorchServe workers {serving['minWorkers']}-{serving['maxWorkers']}, batch size "
        f"{serving['batchSize']}, max batch delay {serving['maxBatchDelay']} ms; "
        f"handler limits {json.dumps(serving.get('handler', {}))}.",
        "",
    ]
    return "\n".join(lines)


def _kserve_properties(name: str, version: str, serving: dict[str, Any]) -> str:
    """The KServe TorchServe config: one model, batch size 1 because KServe's v1 envelope
    hands the handler one request's instances (batched together) at a time."""
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            name: {
                version: {
                    "defaultVersion": True,
                    "marName": f"{name}.mar",
                    "minWorkers": serving["minWorkers"],
                    "maxWorkers": serving["maxWorkers"],
                    "batchSize": 1,
                    "maxBatchDelay": serving["maxBatchDelay"],
                    "responseTimeout": serving["responseTimeout"],
                }
            }
        },
    }
    template = (serving_dir() / KSERVE_CONFIG).read_text()
    return (
        f"{template.rstrip()}\nmodel_store={KSERVE_MODEL_STORE}\n"
        f"model_snapshot={json.dumps(snapshot, separators=(',', ':'))}\n"
    )


def _archive(work: Path, store: Path, name: str, version: str, files: list[Path]) -> Path:
    """torch-model-archiver in a subprocess with a private temp folder: it stages files in
    TMPDIR/<name>, which concurrent exports of one model name would otherwise share."""
    cmd = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", name, "--version", version,
        "--serialized-file", str(work / "model.pt"),
        "--handler", str(serving_dir() / HANDLER),
        "--config-file", str(work / MODEL_CONFIG),
        "--extra-files", ",".join(str(f) for f in files),
        "--export-path", str(store), "--archive-format", "default",
    ]  # fmt: skip
    staging = work / "tmp"
    staging.mkdir()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ | {"TMPDIR": str(staging)}
    )
    archive = store / f"{name}.mar"
    if done.returncode != 0 or not archive.is_file():
        raise ExportError(f"torch-model-archiver failed: {(done.stderr or done.stdout).strip()}")
    return archive


def export_model(
    checkpoint: Path,
    out: Path,
    *,
    metrics: Path | None = None,
    name: str = "ihl",
    version: str = "1",
    data_version: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    max_batch_delay: int | None = None,
    overwrite: bool = False,
    runtime: str = "torch",
    detector: Path | None = None,
    detector_metrics: Path | None = None,
    precision: str = "fp32",
) -> Path:
    """Write the export folder for ``checkpoint`` at ``out`` (layout in the module docstring).

    The folder is built next to ``out`` and renamed into place, so ``out`` is
    either the complete export or untouched. An existing non-empty ``out`` is
    replaced only with ``overwrite``. ``workers``, ``batch_size`` and
    ``max_batch_delay`` (ms) override serving/model-config.yaml. ``runtime`` "onnx" packs
    the model as ONNX too, for ONNX Runtime; ``detector`` is a detector file to pack (else
    the config's detector when it has weights) and ``detector_metrics`` its metrics, for
    the card. ``precision`` (fp32, bf16 or fp16) is the one the handler runs the pose
    model's forward under, written to model-config.yaml's handler section; fp16 serves on
    GPU workers only (a CPU worker refuses to load it), and ONNX Runtime runs fp32 only.
    Returns the archive's path.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_name(name, "model name", ExportError)
    check_name(version, "version", ExportError)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(
            f"{out} exists and is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    if runtime not in RUNTIMES:
        raise ExportError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    try:  # the serving device is unknown here: a CPU worker refuses fp16 when it loads
        check_precision(precision, "cuda", runtime)
    except PrecisionError as err:
        raise ExportError(str(err)) from None
    model, cfg = load_model(checkpoint)
    scores = _read_metrics(Path(metrics)) if metrics is not None else {}
    if detector_metrics is not None:
        scores |= {f"detector_{k}": v for k, v in _read_metrics(Path(detector_metrics)).items()}
    found_by, detector_cfg = _detector(cfg, detector)
    if runtime == "onnx" and detector_cfg is not None:
        try:
            check_exportable(detector_cfg.architecture)
        except DetectorError as err:
            raise ExportError(str(err)) from None
    serving = _model_config(workers, batch_size, max_batch_delay)
    serving["handler"] = {**serving.get("handler", {}), "precision": precision}
    spec = get_spec(cfg.data.dataset)
    info = {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "data_version": data_version,
        "checkpoint": checkpoint.name,
        "config_name": cfg.name,
        "backbone": cfg.model.backbone,
        "head": cfg.model.head,
        "input_size": list(cfg.model.input_size),
        "parameters": sum(p.numel() for p in model.parameters()),
        "flip": cfg.test.flip,
        "runtime": runtime,
        "precision": precision,
        "detector": detector_cfg and f"{detector_cfg.architecture} ({found_by})",
        "dataset": spec.name,
        "keypoint_names": list(spec.joints),
        "metrics": scores,
        "serving": serving,
        "ihl": package_version("ihl"),
        "torch": package_version("torch"),
    }
    with replacing_folder(out, overwrite=overwrite) as build:
        work = build / ".work"
        work.mkdir()
        save_model(work / "model.pt", model, cfg)
        (work / "config.yaml").write_text(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
        joints = {
            "dataset": spec.name,
            "keypoint_names": list(spec.joints),
            "skeleton": [list(pair) for pair in spec.skeleton],
            "flip_pairs": [list(pair) for pair in spec.flip_pairs],
            "sigmas": list(spec.sigmas) if spec.sigmas else None,
        }
        (work / "keypoints.json").write_text(json.dumps(joints, indent=2))
        (work / MODEL_CONFIG).write_text(yaml.safe_dump(serving, sort_keys=False))
        card = _card(info)
        (work / "model_card.md").write_text(card)
        (work / "model_card.json").write_text(json.dumps(info, indent=2))
        extra = [work / f for f in ("config.yaml", "keypoints.json", "model_card.md")]
        if runtime == "onnx":
            extra.append(export_onnx(model.eval(), work / ONNX_FILE))
        if detector_cfg is not None:
            packed = _pack_detector(cfg.detector, detector, work / DETECTOR_FILE)
            extra.append(packed)
            if runtime == "onnx":
                extra.append(export_detector(*load_detector(packed), work / DETECTOR_ONNX_FILE))
        (build / "model-store").mkdir()
        archive = _archive(
            work, build / "model-store", name, version, [*extra, work / "model_card.json"]
        )
        (build / "config").mkdir()
        (build / "config" / "config.properties").write_text(
            _kserve_properties(name, version, serving)
        )
        (build / "model_card.md").write_text(card)
        shutil.rmtree(work)
    return out / "model-store" / archive.name
