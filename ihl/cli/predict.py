"""Keypoints drawn on images: a checkpoint's predictions, or the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import (
    USER_ERRORS,
    Dataset,
    DetectorOpt,
    DeviceOpt,
    NoFlipOpt,
    Precision,
    PrecisionOpt,
    Runtime,
    RuntimeOpt,
    fail,
    print_table,
    require_file,
)


def predict_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="IHL checkpoint.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for predictions.json and drawn images.")
    ],
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Person boxes: COCO detection results or {file_name: [[x,y,w,h,score?],...]}; "
            "default: the person detector finds them."
        ),
    ] = None,
    detector: DetectorOpt = None,
    whole_image: Annotated[
        bool, typer.Option("--whole-image", help="No detector: each image is one person.")
    ] = False,
    runtime: RuntimeOpt = Runtime.torch,
    precision: PrecisionOpt = Precision.fp32,
    min_box_score: Annotated[float, typer.Option(help="Skip boxes scoring below this.")] = 0.0,
    device: DeviceOpt = None,
    no_flip: NoFlipOpt = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per forward pass.")] = 32,
) -> None:
    """Predict keypoints on images: writes predictions.json and each image with skeletons."""
    from ihl.checkpoint import CheckpointError, load_model
    from ihl.detection.models import DetectorError, detector_for
    from ihl.device import resolve_device
    from ihl.inference import check_precision
    from ihl.predict import collect_images, load_boxes, predict_files

    if sum((boxes is not None, detector is not None, whole_image)) > 1:
        fail("give one of --boxes, --detector and --whole-image")
    try:
        files = collect_images(images)
        box_map = None if boxes is None else load_boxes(boxes, files)
        torch_device = resolve_device(device)
        check_precision(precision.value, torch_device, runtime.value)
        model, cfg = load_model(checkpoint)
        detecting = boxes is None and not whole_image
        if detecting and detector is None and cfg.detector.weights is None:
            raise DetectorError(
                f"{checkpoint}: its config's detector has no weights; give --detector FILE "
                "(`ihl detector train`, dvc repro's detector/detector.pt) or --boxes FILE"
            )
        found_by = detector_for(cfg.detector, detector) if detecting else None
        if runtime is Runtime.onnx:
            from ihl.runtime import OnnxPoseModel, export_onnx

            model = OnnxPoseModel(export_onnx(model.eval(), out / "pose.onnx"), cfg.model)
            if found_by is not None:
                from ihl.detection.onnx import onnx_detector

                found_by = onnx_detector(*found_by, out / "detector.onnx")
    except (*USER_ERRORS, CheckpointError, DetectorError, ValueError) as err:
        fail(str(err))
    try:
        summary = predict_files(
            model.to(torch_device),
            cfg,
            files,
            out,
            box_map,
            min_box_score=min_box_score,
            flip=False if no_flip else None,
            batch_size=batch_size,
            detector=found_by,
            precision=precision.value,
        )
    except USER_ERRORS as err:
        fail(str(err))
    print_table(summary)


def show_gt_cmd(
    ann: Annotated[Path, typer.Argument(help="COCO keypoint json, or MPII json with --dataset.")],
    image_dir: Annotated[Path, typer.Argument(help="Folder of the annotated images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the drawn images.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Draw at most N images.")] = None,
    dataset: Annotated[Dataset, typer.Option(help="Annotation format.")] = Dataset.coco,
) -> None:
    """Draw ground-truth boxes and skeletons, to check annotations by eye."""
    from ihl.visualize import show_ground_truth

    require_file(ann, "annotation file")
    if not image_dir.is_dir():
        fail(f"image folder not found: {image_dir}")
    try:
        written = show_ground_truth(ann, image_dir, out, dataset=dataset.value, limit=limit)
    except USER_ERRORS as err:
        fail(str(err))
    typer.echo(f"wrote {len(written)} images to {out}")
