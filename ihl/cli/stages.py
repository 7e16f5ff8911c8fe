"""The stages of the pipeline (synth, prepare, train, evaluate), as dvc.yaml and the
Kubeflow components run them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import (
    USER_ERRORS,
    BoxSource,
    Dataset,
    DetectorOpt,
    DeviceOpt,
    NoFlipOpt,
    Precision,
    PrecisionOpt,
    Runtime,
    RuntimeOpt,
    fail,
    load_config,
    print_table,
    require_file,
)
from ihl.data.errors import DatasetError
from ihl.edge.params import TRAIN_SECTIONS


def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Dataset folder to create, e.g. data/synth.")],
    dataset: Annotated[Dataset, typer.Option(help="Layout to write.")] = Dataset.coco,
    train: Annotated[
        int, typer.Option(min=0, help="Training images (the sample preset is tuned for 1000).")
    ] = 1000,
    val: Annotated[int, typer.Option(min=0, help="Validation images.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    size: Annotated[str, typer.Option(help="Image size WxH.")] = "320x240",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write a synthetic dataset in the COCO, MPII or CrowdPose layout, for runs without the
    real data."""
    from ihl.data.synth import make_coco_synth, make_crowdpose_synth, make_mpii_synth

    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        fail(f"--size {size!r}: expected WIDTHxHEIGHT in pixels, e.g. 320x240")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        fail(f"{out} exists and is not empty; pass --overwrite to replace it")
    make = {
        Dataset.coco: make_coco_synth,
        Dataset.mpii: make_mpii_synth,
        Dataset.crowdpose: make_crowdpose_synth,
    }[dataset]
    try:
        summary = make(out, train, val, (int(width), int(height)), seed, overwrite=overwrite)
    except FileExistsError as err:
        fail(str(err))
    typer.echo(f"wrote a synthetic {dataset.value} dataset to {out}")
    print_table(summary)


def train_cmd(
    config: Annotated[str, typer.Option("--config", "-c", help="Preset name or YAML file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics.")],
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from the last checkpoint in OUT; refused if it was written with "
            "another config, data or training code."
        ),
    ] = False,
    resume_matching: Annotated[
        bool,
        typer.Option(
            help="Continue from the last checkpoint in OUT if it is unfinished and was written "
            "with this config, data and training code, else train from scratch (what `dvc "
            "repro` runs)."
        ),
    ] = False,
    device: DeviceOpt = None,
    overrides: Annotated[
        list[str],
        typer.Option("--set", help="Override a config value (repeatable): model.head=heatmap."),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    params: Annotated[
        Path | None,
        typer.Option(
            help="DVC params file (params.yaml): its dataset and the changes its config "
            "sections make to the preset, before any --set."
        ),
    ] = None,
    data_index: Annotated[
        Path | None,
        typer.Option(
            help="`ihl prepare`'s index.json: its data fingerprint is saved with the "
            "checkpoints, and --resume refuses a checkpoint of other data."
        ),
    ] = None,
) -> None:
    """Train a pose model from a preset or YAML config."""
    from ihl.files import FolderBusyError, load_json

    cfg = load_config(config, overrides, params, TRAIN_SECTIONS)
    fingerprint = None
    if data_index is not None:
        try:
            fingerprint = load_json(data_index)["fingerprint"]
        except (ValueError, KeyError, TypeError) as err:
            fail(f"--data-index {data_index}: no data fingerprint ({err})")
    from ihl.checkpoint import CheckpointError
    from ihl.edge.live import LiveLog
    from ihl.train import train

    try:
        result = train(
            cfg,
            out,
            resume="matching" if resume_matching else resume,
            device=device,
            progress=True,
            epoch_log=LiveLog(out / "live"),
            data_fingerprint=fingerprint,
        )
    except (*USER_ERRORS, CheckpointError, FolderBusyError) as err:
        fail(str(err))
    print_table(result)


def prepare_cmd(
    dataset: Annotated[
        str, typer.Option(help="synth (`ihl synth`'s COCO layout), coco, mpii or crowdpose.")
    ],
    root: Annotated[Path, typer.Option(help="Dataset folder, e.g. data/synth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.json.")],
    decode: Annotated[
        bool,
        typer.Option(
            "--decode/--no-decode", help="Also decode every image (minutes on COCO); default: no."
        ),
    ] = False,
    fingerprint_cache: Annotated[
        Path | None,
        typer.Option(help="JSON file of file digests by (path, size, mtime), reused next time."),
    ] = None,
) -> None:
    """Validate a dataset and write OUT/index.json: counts per split and a content fingerprint."""
    from ihl.prepare import prepare

    try:
        summary = prepare(
            dataset, root, out, decode_images=decode, fingerprint_cache=fingerprint_cache
        )
    except DatasetError as err:
        hint = ""
        if not root.is_dir() and dataset in ("coco", "mpii", "crowdpose"):
            hint = (
                f"\nadd it with `ihl data add {dataset} PATH`, or fetch a tracked copy with "
                f"`ihl data pull {root}.dvc`"
            )
        fail(f"{err}{hint}")
    typer.echo(f"wrote {out / 'index.json'}: data version {summary['version']}")
    for split, counts in summary["splits"].items():
        typer.echo(f"{split:<8}  " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def evaluate_cmd(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="IHL checkpoint to evaluate (omit with --results).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for results and metrics.")
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Dataset root; default: the checkpoint config's data.root.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default: val).")] = None,
    boxes: Annotated[
        str | None,
        typer.Option(
            help="Person boxes: detections (the dataset's detection file), gt, detector (our "
            "person detector run over the split), or a COCO detection-results FILE "
            "(default: detections)."
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder of --ann (default: the split's).")
    ] = None,
    best: Annotated[
        Path | None,
        typer.Option(help="Also score this checkpoint (a run's best.pt), as best_checkpoint_*."),
    ] = None,
    detector: DetectorOpt = None,
    runtime: RuntimeOpt = Runtime.torch,
    precision: PrecisionOpt = Precision.fp32,
    no_flip: NoFlipOpt = False,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    results: Annotated[
        Path | None, typer.Option(help="Score this COCO keypoint results file instead.")
    ] = None,
    ann: Annotated[
        Path | None,
        typer.Option(
            help="COCO annotation file the --results file answers; with a CHECKPOINT, the "
            "annotation or image-info file to run on instead of the split's."
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint (COCO or CrowdPose AP, MPII PCKh), or score a results file.

    ihl evaluate CHECKPOINT --out DIR          run the model on a dataset split
    ihl evaluate CHECKPOINT --out DIR --ann image_info.json --images DIR --boxes dets.json
                                               test-dev: results.json for submission only
    ihl evaluate --results FILE --ann FILE     score predictions made elsewhere
    """
    if checkpoint is not None and results is not None:
        fail("give a CHECKPOINT or --results, not both")
    if checkpoint is None and results is None:
        fail("give a CHECKPOINT to evaluate, or --results FILE --ann FILE to score a results file")
    if results is not None:
        checkpoint_only = {
            "--data-root": data_root,
            "--split": split,
            "--boxes": boxes,
            "--device": device,
            "--no-flip": no_flip or None,
            "--images": images,
            "--best": best,
            "--detector": detector,
            "--precision": None if precision is Precision.fp32 else precision,
        }
        extra = [name for name, value in checkpoint_only.items() if value is not None]
        if extra:
            fail(f"{', '.join(extra)} only apply when evaluating a CHECKPOINT, not --results")
        if ann is None:
            fail("--results needs --ann, the COCO annotation file the results answer")
        _score_results(results, ann, out)
        return
    if images is not None and ann is None:
        fail("--images goes with --ann, the annotation or image-info file of those images")
    box_source, detections = _box_source(boxes)
    if out is None:
        fail("evaluating a CHECKPOINT needs --out DIR for its results and metrics")
    require_file(checkpoint, "checkpoint")
    if detector is not None and boxes != BoxSource.detector:
        fail("--detector goes with --boxes detector")
    from ihl.checkpoint import CheckpointError
    from ihl.detection.models import DetectorError
    from ihl.evaluate import evaluate
    from ihl.inference import PrecisionError

    try:
        metrics = evaluate(
            checkpoint,
            out,
            data_root=data_root,
            split=split or "val",
            boxes=box_source,
            device=device,
            flip=False if no_flip else None,
            batch_size=batch_size,
            progress=True,
            ann_file=ann,
            image_dir=images,
            detections=detections,
            best=best,
            detector=detector,
            runtime=runtime.value,
            precision=precision.value,
        )
    except (*USER_ERRORS, CheckpointError, DetectorError, PrecisionError) as err:
        fail(str(err))
    if metrics:
        print_table(metrics)
    else:
        typer.echo(f"wrote {out / 'results.json'} (image-info file: no ground truth, no metrics)")


def _box_source(boxes: str | None) -> tuple[str, Path | None]:
    """(boxes argument of evaluate, detection file): --boxes is a BoxSource or a file."""
    if boxes is None or boxes in tuple(BoxSource):
        return (boxes or BoxSource.detections.value), None
    path = Path(boxes)
    require_file(path, "detection-results file (--boxes is detections, gt or a FILE)")
    return BoxSource.detections.value, path


def _score_results(results: Path, ann: Path, out: Path | None) -> None:
    from ihl.metrics.coco import score_results_file, write_metrics

    require_file(results, "results file")
    require_file(ann, "annotation file")
    try:
        metrics = score_results_file(results, ann)
    except ValueError as err:
        fail(str(err))
    if out is not None:
        typer.echo(f"wrote {write_metrics(metrics, out / 'metrics.json')}")
    print_table(metrics)
