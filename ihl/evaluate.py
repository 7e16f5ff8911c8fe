"""Evaluation stage: run a model over a split, map keypoints back to the images, score them.

``predict_dataset`` and ``gather_and_score`` are the pieces training reuses for
validation; ``evaluate`` is the stage: checkpoint in, ``metrics.json`` and
``results.json`` out. Under torchrun every rank predicts one shard of the crops
(contiguous, whole batches, none twice) and rank 0 scores them all, with the
same numbers a single process gets.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ihl.checkpoint import load_model_and_epoch
from ihl.config import Config
from ihl.data.build import COCO_SPLITS, build_eval_dataset, worker_init
from ihl.data.coco_format import is_image_info
from ihl.data.errors import DatasetError
from ihl.data.mpii_format import split_json
from ihl.data.transforms import coords_to_image
from ihl.device import num_workers as worker_count
from ihl.device import resolve_device
from ihl.distributed import (
    Distributed,
    broadcast_from_main,
    gather_to_main,
    process_group,
    shard,
)
from ihl.files import write_json
from ihl.inference import check_precision, predict_crops
from ihl.metrics.coco import (
    build_results,
    evaluate_coco,
    rescore,
    write_metrics,
    write_results,
)
from ihl.metrics.crowdpose import build_crowdpose_results, evaluate_crowdpose
from ihl.metrics.mpii import evaluate_mpii_mat, evaluate_mpii_reference


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    cfg: Config,
    dataset: Dataset,
    device: str | torch.device,
    batch_size: int,
    progress: bool,
    *,
    num_workers: int | None = None,
    indices: range | None = None,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Keypoints in image pixels for every crop of ``dataset`` (or those of ``indices``), in
    dataset order.

    Returns the arrays ``build_results`` takes: image_ids, keypoints (N, K, 2),
    keypoint_scores (N, K), box_scores and box_areas (the padded crop area, as
    the HRNet OKS-NMS uses), plus sigma (N, K, 2) for IHL models; no arrays for
    no crops. ``precision`` is the forward's (``predict_crops``).
    """
    device = torch.device(device)
    workers = worker_count(cfg.train.num_workers if num_workers is None else num_workers)
    loader = DataLoader(
        dataset if indices is None else Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=worker_init,
        pin_memory=device.type == "cuda",
    )
    flip_index = list(dataset.spec.flip_index)
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        images = batch["image"].to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pred = predict_crops(model, images, cfg.test, flip_index, precision)
        keypoints = coords_to_image(
            pred.coords.float().cpu().numpy(),
            batch["center"],
            batch["scale"],
            batch["rotation"],
            cfg.model.input_size,
            batch["flipped"],
        )
        found = {
            "image_ids": batch["image_id"].numpy(),
            "keypoints": keypoints,
            "keypoint_scores": pred.scores.float().cpu().numpy(),
            "box_scores": batch["box_score"].numpy(),
            "box_areas": batch["scale"].prod(-1).numpy(),
        }
        if pred.sigma is not None:
            found["sigma"] = pred.sigma.float().cpu().numpy()
        for key, value in found.items():
            parts.setdefault(key, []).append(value)
    model.train(was_training)
    return {key: np.concatenate(values) for key, values in parts.items()}


def gather_and_score(
    cfg: Config,
    predictions: Mapping[str, np.ndarray],
    ground_truth: Path,
    ddp: Distributed,
    score_it: bool = True,
) -> tuple[dict[str, float], list[dict]]:
    """``score`` of every rank's predictions (their shards in rank order), computed on rank 0;
    every rank gets the metrics, only rank 0 the results. Without ``score_it``, results only."""
    parts = gather_to_main(dict(predictions), ddp)
    metrics: dict[str, float] = {}
    results: list[dict] = []
    if parts is not None:
        nonempty = [part for part in parts if part]
        merged = {key: np.concatenate([p[key] for p in nonempty]) for key in nonempty[0]}
        if score_it:
            metrics, results = score(cfg, merged, ground_truth)
        elif cfg.data.dataset == "crowdpose":
            results = build_crowdpose_results(merged)
        else:
            results = build_results(merged)
    return broadcast_from_main(metrics, ddp), results


def score(
    cfg: Config, predictions: Mapping[str, np.ndarray], ground_truth: Path
) -> tuple[dict[str, float], list[dict]]:
    """Metrics and COCO-format results of ``predict_dataset``'s output.

    COCO: rescoring, OKS-NMS at 0.9 and pycocotools AP. MPII: PCKh against the
    .mat ground truth, and as ``reference_*`` the reference's PCKh (``ihl.metrics.mpii``); its
    results use the same JSON shape with 16 joints. CrowdPose: the
    reference's protocol (``ihl.metrics.crowdpose``).
    """
    if cfg.data.dataset == "mpii":
        keypoints = predictions["keypoints"]
        reference = evaluate_mpii_reference(keypoints, split_json(ground_truth), ground_truth)
        metrics = evaluate_mpii_mat(keypoints, ground_truth)
        metrics |= {f"reference_{name}": value for name, value in reference.items()}
        return metrics, _person_results(predictions)
    if cfg.data.dataset == "crowdpose":
        results = build_crowdpose_results(predictions)
        return evaluate_crowdpose(results, ground_truth), results
    results = build_results(predictions)
    return evaluate_coco(results, ground_truth), results


def _person_results(predictions: Mapping[str, np.ndarray]) -> list[dict]:
    """One result per person, no NMS: MPII persons are given, not detected (no OKS sigmas)."""
    triples = np.concatenate(
        [predictions["keypoints"], predictions["keypoint_scores"][..., None]], -1
    )
    scores = rescore(predictions["keypoint_scores"], predictions["box_scores"])
    return [
        {
            "image_id": int(image_id),
            "category_id": 1,
            "keypoints": [float(v) for v in kpts.reshape(-1)],
            "score": float(s),
        }
        for image_id, kpts, s in zip(predictions["image_ids"], triples, scores, strict=True)
    ]


@dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate`` scores and how: the crops (a split of ``data_root``, default the
    checkpoint's ``data.root``, with ``boxes`` "detections", "gt" or "detector"; ``ann_file``,
    ``image_dir`` and ``detections`` override the layout's files, ``detector`` the config's
    detector), and how the model runs over them."""

    data_root: Path | None = None
    split: str = "val"
    boxes: str = "detections"
    ann_file: Path | None = None
    image_dir: Path | None = None
    detections: Path | None = None
    detector: Path | None = None
    device: str | None = None
    flip: bool | None = None
    """Overrides the checkpoint's test-time flip setting."""
    batch_size: int = 32
    num_workers: int | None = None
    runtime: str = "torch"
    precision: str = "fp32"
    progress: bool = True


def evaluate(
    checkpoint: Path, out_dir: Path, *, best: Path | None = None, **options: Any
) -> dict[str, float]:
    """Evaluate a checkpoint; writes ``out_dir/results.json`` then ``out_dir/metrics.json``.

    ``options`` are the fields of ``EvalOptions``. With ``best`` (the training run's best.pt,
    when ``checkpoint`` is its final.pt) that checkpoint is scored the same way and its
    metrics join the others as ``best_checkpoint_<name>``. An image-info ``ann_file``
    (test-dev: images, no annotations) gives the results file only, ready for submission,
    and no metrics. ``boxes="detector"`` runs the person detector (the file ``detector``,
    else the config's) over the split first: its boxes go to ``out_dir/detections.json`` and
    its box AP into the metrics. ``runtime="onnx"`` runs the pose model exported to ONNX
    under ONNX Runtime. ``precision`` "bf16" or "fp16" runs the pose model's forward under
    autocast (``ihl.inference.check_precision`` says where each can run: fp16 on CUDA only,
    and neither with ONNX). Files are written atomically, and the results, metrics and
    detections only once everything has been computed, so a failed run leaves none of them
    (the ONNX exports, ``pose.onnx`` and ``detector.onnx``, are written before they run).
    Under torchrun the ranks share the crops and rank 0 writes the files; every rank
    returns the metrics.
    """
    opts = EvalOptions(**options)
    out_dir = Path(out_dir)
    image_info = opts.ann_file is not None and is_image_info(opts.ann_file)
    if image_info and best is not None:
        raise ValueError(f"{opts.ann_file}: an image-info file has no ground truth to compare with")
    dev = resolve_device(opts.device)
    check_precision(opts.precision, dev, opts.runtime)
    loaded = [load_model_and_epoch(ckpt) for ckpt in (checkpoint, best) if ckpt is not None]
    if opts.boxes == "detector" and loaded[0][1].data.dataset == "mpii":
        raise ValueError("--boxes detector: MPII persons are given by their centre and scale")
    with (
        process_group(dev) as (ddp, dev),
        tempfile.TemporaryDirectory(prefix="ihl-evaluate-") as scratch,
    ):
        box_metrics: dict[str, float] = {}
        found_boxes: list[dict] = []
        if opts.boxes == "detector":
            box_metrics, found_boxes = _detect(loaded[0][1], opts, dev, ddp, out_dir)
            detections = write_json(Path(scratch) / "detections.json", found_boxes)
            opts = replace(opts, boxes="detections", detections=detections)
        scored = loaded[:1] if len(loaded) == 2 and same_model(loaded[0], loaded[1]) else loaded
        found = [
            _run(model, cfg, dev, ddp, opts, score_it=not image_info, out_dir=out_dir)
            for model, cfg, _ in scored
        ]
        metrics, results = found[0]
        metrics = {**metrics, **box_metrics}
        if best is not None:
            best_metrics = found[-1][0]
            best_epoch = loaded[1][2]
            metrics = {
                **metrics,
                **{f"best_checkpoint_{k}": v for k, v in best_metrics.items()},
                **({"best_checkpoint_epoch": float(best_epoch)} if best_epoch is not None else {}),
            }
        if ddp.is_main:
            if box_metrics:
                write_json(out_dir / "detections.json", found_boxes)
            write_results(results, out_dir / "results.json")
            if not image_info:
                write_metrics(metrics, out_dir / "metrics.json")
        return metrics


def same_model(
    a: tuple[torch.nn.Module, Config, Any], b: tuple[torch.nn.Module, Config, Any]
) -> bool:
    """Whether two loaded checkpoints hold the same config and weights: a run that validates
    once, at its end, saves one model as both best.pt and final.pt, scored once."""
    if a[1] != b[1]:
        return False
    first, second = a[0].state_dict(), b[0].state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _run(
    model: torch.nn.Module,
    cfg: Config,
    dev: torch.device,
    ddp: Distributed,
    opts: EvalOptions,
    *,
    score_it: bool,
    out_dir: Path,
) -> tuple[dict[str, float], list[dict]]:
    """(metrics, results) of one loaded checkpoint, this rank's shard of the crops predicted
    and gathered to rank 0; without ``score_it`` results only."""
    if opts.flip is not None:
        cfg.test.flip = opts.flip
    dataset, ground_truth = build_eval_dataset(
        cfg,
        opts.data_root,
        opts.split,
        opts.boxes,
        ann_file=opts.ann_file,
        image_dir=opts.image_dir,
        detections=opts.detections,
    )
    if cfg.data.dataset == "mpii" and not ground_truth.is_file():
        raise DatasetError(f"{ground_truth}: MPII ground-truth file not found")
    model.to(dev)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if opts.runtime == "onnx":
        model = _onnx(model, out_dir)
    batch_size = opts.batch_size
    predictions = predict_dataset(
        model,
        cfg,
        dataset,
        dev,
        batch_size,
        opts.progress and ddp.is_main,
        num_workers=opts.num_workers,
        indices=shard(len(dataset), ddp.rank, ddp.world_size, batch_size),
        precision=opts.precision,
    )
    return gather_and_score(cfg, predictions, ground_truth, ddp, score_it)


def _detect(
    cfg: Config, opts: EvalOptions, dev: torch.device, ddp: Distributed, out_dir: Path
) -> tuple[dict[str, float], list[dict]]:
    """Run the person detector (``opts.detector``, else the config's) over the split, the ranks
    sharing the images (with runtime ``onnx`` exported beside the results as
    ``detector.onnx``, under ONNX Runtime on the CPU); its box AP and its boxes, on every
    rank."""
    from ihl.detection.boxap import evaluate_detector
    from ihl.detection.models import detector_for

    model, detector_cfg = detector_for(cfg.detector, opts.detector)
    if opts.runtime == "onnx":
        from ihl.detection.onnx import onnx_detector

        model, detector_cfg = onnx_detector(model, detector_cfg, out_dir / "detector.onnx")
    root = cfg.data.root if opts.data_root is None else opts.data_root
    split = COCO_SPLITS.get(opts.split, opts.split)
    return evaluate_detector(model.to(dev), detector_cfg, root, split, ddp)


def _onnx(model: torch.nn.Module, out_dir: Path):
    """The model exported to ONNX (kept beside the results as ``pose.onnx``) under ONNX
    Runtime, on the CPU."""
    from ihl.runtime import OnnxPoseModel, export_onnx

    return OnnxPoseModel(export_onnx(model.cpu().eval(), out_dir / "pose.onnx"), model.cfg)
