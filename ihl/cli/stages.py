"""The `ihl` command line: stages and tools, each a thin call into the library."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from ihl import config as config_mod
from ihl.data.errors import DatasetError

app = typer.Typer(
    help="Implicit Heatmap Learning: train, evaluate, export and serve pose models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Dataset tools: check a dataset, track it with DVC, push and pull it.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

ConfigArg = Annotated[str, typer.Argument(help="Preset name (see `ihl presets`) or a YAML file.")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="torch device, e.g. cpu, cuda, cuda:1; default: CUDA if present.")
]
NoFlipOpt = Annotated[bool, typer.Option("--no-flip", help="Skip the flip test (faster).")]

USER_ERRORS = (
    DatasetError,
    config_mod.ConfigError,
    FileNotFoundError,
    FileExistsError,
)
"""Failures caused by the user's files or arguments: reported in one line, no traceback.
Commands that load checkpoints add ``CheckpointError``, imported with torch only there
so that the light commands start fast."""


class Dataset(StrEnum):
    coco = "coco"
    mpii = "mpii"


class BoxSource(StrEnum):
    detections = "detections"
    gt = "gt"


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _load_config(name_or_path: str, overrides: dict[str, Any] | None = None) -> config_mod.Config:
    try:
        return config_mod.load(name_or_path, overrides)
    except config_mod.ConfigError as err:
        _fail(str(err))


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key.sub=value`` pairs; values are YAML, so numbers, booleans and lists keep their type."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            _fail(f"--set {item!r}: expected dotted.key=value, e.g. --set model.head=heatmap")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            _fail(f"--set {item!r}: the value is not valid YAML: {err}")
    return overrides


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        _fail(f"{what} not found: {path}")


def _print_table(values: dict[str, Any]) -> None:
    """Print flat results one per line; floats with four decimals, NaN/None as n/a."""
    width = max((len(str(k)) for k in values), default=0)
    for key, value in values.items():
        if value is None or isinstance(value, float) and not math.isfinite(value):
            text = "n/a"
        elif isinstance(value, float):
            text = f"{value:.4f}"
        else:
            text = str(value)
        typer.echo(f"{key:<{width}}  {text}")


@app.command()
def presets() -> None:
    """List the configuration presets."""
    for name in config_mod.preset_names():
        typer.echo(name)


@app.command("model-info")
def model_info_cmd(
    preset: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters and multiply-adds (GMACs) of a configured model at its input size."""
    from ihl.model_info import model_info

    info = model_info(_load_config(preset))
    if as_json:
        typer.echo(json.dumps(info))
    else:
        w, h = info["input_size"]
        typer.echo(f"params {info['params'] / 1e6:.2f} M, {info['gflops']:.2f} GMACs at {w}x{h}")


@app.command("import-checkpoint")
def import_checkpoint_cmd(
    src: Annotated[Path, typer.Argument(help="Reference (MMPose-layout) checkpoint.")],
    dst: Annotated[Path, typer.Argument(help="Where to write the IHL checkpoint.")],
    config: Annotated[str, typer.Option("--config", "-c", help="Preset or YAML of the model.")],
    drop: Annotated[
        list[str],
        typer.Option(
            help="Discard reference keys with this prefix (repeatable), e.g. a training-only flow.",
        ),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
) -> None:
    """Convert a reference IHL checkpoint (backbone.*, head.final_layer.*,
    head.simplebaseline_head.*) into this project's format."""
    from ihl.checkpoint import CheckpointError, import_checkpoint

    cfg = _load_config(config)
    try:
        out = import_checkpoint(src, dst, cfg, tuple(drop))
    except CheckpointError as err:
        _fail(str(err))
    typer.echo(f"wrote {out}")


@app.command("synth")
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
    """Write a synthetic dataset in the COCO or MPII layout, for runs without the real data."""
    from ihl.data.synth import make_coco_synth, make_mpii_synth

    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        _fail(f"--size {size!r}: expected WIDTHxHEIGHT in pixels, e.g. 320x240")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        _fail(f"{out} exists and is not empty; pass --overwrite to replace it")
    make = make_coco_synth if dataset is Dataset.coco else make_mpii_synth
    try:
        summary = make(out, train, val, (int(width), int(height)), seed, overwrite=overwrite)
    except FileExistsError as err:
        _fail(str(err))
    typer.echo(f"wrote a synthetic {dataset.value} dataset to {out}")
    _print_table(summary)


@app.command("train")
def train_cmd(
    config: Annotated[str, typer.Option("--config", "-c", help="Preset name or YAML file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics.")],
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
    device: DeviceOpt = None,
    overrides: Annotated[
        list[str],
        typer.Option("--set", help="Override a config value (repeatable): model.head=heatmap."),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    params: Annotated[
        Path | None,
        typer.Option(
            help="DVC params file (params.yaml): its model/loss/train/data sections and its "
            "dataset are layered over the preset, before any --set."
        ),
    ] = None,
) -> None:
    """Train a pose model from a preset or YAML config."""
    from ihl.params import config_overrides

    try:
        layered = {} if params is None else config_overrides(params)
    except config_mod.ConfigError as err:
        _fail(str(err))
    cfg = _load_config(config, layered | _parse_overrides(overrides))
    from ihl.checkpoint import CheckpointError
    from ihl.engine import train

    try:
        result = train(cfg, out, resume=resume, device=device, progress=True)
    except (*USER_ERRORS, CheckpointError) as err:
        _fail(str(err))
    _print_table(result)


@app.command("prepare")
def prepare_cmd(
    dataset: Annotated[str, typer.Option(help="synth (`ihl synth`'s COCO layout), coco or mpii.")],
    root: Annotated[Path, typer.Option(help="Dataset folder, e.g. data/synth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.json.")],
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Only check that images exist (fast).")
    ] = False,
) -> None:
    """Validate a dataset and write OUT/index.json: counts per split and a content fingerprint."""
    from ihl.prepare import prepare

    try:
        summary = prepare(dataset, root, out, decode_images=not no_decode)
    except DatasetError as err:
        hint = ""
        if not root.is_dir() and dataset in ("coco", "mpii"):
            hint = (
                f"\nadd it with `ihl data add {dataset} PATH`, or fetch a tracked copy with "
                f"`ihl data pull {root}.dvc`"
            )
        _fail(f"{err}{hint}")
    typer.echo(f"wrote {out / 'index.json'}: data version {summary['version']}")
    for split, counts in summary["splits"].items():
        typer.echo(f"{split:<8}  " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("evaluate")
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
        BoxSource | None,
        typer.Option(help="Person boxes: the detector's, or ground truth (default: detections)."),
    ] = None,
    no_flip: NoFlipOpt = False,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    results: Annotated[
        Path | None, typer.Option(help="Score this COCO keypoint results file instead.")
    ] = None,
    ann: Annotated[
        Path | None, typer.Option(help="COCO annotation file the --results file answers.")
    ] = None,
) -> None:
    """Evaluate a checkpoint (COCO AP or MPII PCKh), or score an existing results file.

    ihl evaluate CHECKPOINT --out DIR          run the model on a dataset split
    ihl evaluate --results FILE --ann FILE     score predictions made elsewhere
    """
    if checkpoint is not None and results is not None:
        _fail("give a CHECKPOINT or --results, not both")
    if checkpoint is None and results is None:
        _fail("give a CHECKPOINT to evaluate, or --results FILE --ann FILE to score a results file")
    if results is not None:
        checkpoint_only = {
            "--data-root": data_root,
            "--split": split,
            "--boxes": boxes,
            "--device": device,
            "--no-flip": no_flip or None,
        }
        extra = [name for name, value in checkpoint_only.items() if value is not None]
        if extra:
            _fail(f"{', '.join(extra)} only apply when evaluating a CHECKPOINT, not --results")
        if ann is None:
            _fail("--results needs --ann, the COCO annotation file the results answer")
        _score_results(results, ann, out)
        return
    if ann is not None:
        _fail("--ann goes with --results; a CHECKPOINT is evaluated on --data-root")
    if out is None:
        _fail("evaluating a CHECKPOINT needs --out DIR for its results and metrics")
    _require_file(checkpoint, "checkpoint")
    from ihl.checkpoint import CheckpointError
    from ihl.evaluate import evaluate

    try:
        metrics = evaluate(
            checkpoint,
            out,
            data_root=data_root,
            split=split or "val",
            boxes=(boxes or BoxSource.detections).value,
            device=device,
            flip=False if no_flip else None,
            batch_size=batch_size,
            progress=True,
        )
    except (*USER_ERRORS, CheckpointError) as err:
        _fail(str(err))
    _print_table(metrics)


def _score_results(results: Path, ann: Path, out: Path | None) -> None:
    from ihl.evaluation.coco import score_results_file, write_metrics

    _require_file(results, "results file")
    _require_file(ann, "annotation file")
    try:
        metrics = score_results_file(results, ann)
    except ValueError as err:
        _fail(str(err))
    if out is not None:
        typer.echo(f"wrote {write_metrics(metrics, out / 'metrics.json')}")
    _print_table(metrics)


@app.command("predict")
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
            "default: the whole image is one person."
        ),
    ] = None,
    min_box_score: Annotated[float, typer.Option(help="Skip boxes scoring below this.")] = 0.0,
    device: DeviceOpt = None,
    no_flip: NoFlipOpt = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per forward pass.")] = 32,
) -> None:
    """Predict keypoints on images: writes predictions.json and each image with skeletons."""
    from ihl.checkpoint import CheckpointError, load_model
    from ihl.inference import resolve_device
    from ihl.predict import collect_images, load_boxes, predict_files

    try:
        files = collect_images(images)
        box_map = None if boxes is None else load_boxes(boxes, files)
        torch_device = resolve_device(device)
        model, cfg = load_model(checkpoint)
    except (*USER_ERRORS, CheckpointError, ValueError) as err:
        _fail(str(err))
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
        )
    except USER_ERRORS as err:
        _fail(str(err))
    _print_table(summary)


@app.command("show-gt")
def show_gt_cmd(
    ann: Annotated[Path, typer.Argument(help="COCO keypoint json, or MPII json with --dataset.")],
    image_dir: Annotated[Path, typer.Argument(help="Folder of the annotated images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the drawn images.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Draw at most N images.")] = None,
    dataset: Annotated[Dataset, typer.Option(help="Annotation format.")] = Dataset.coco,
) -> None:
    """Draw ground-truth boxes and skeletons, to check annotations by eye."""
    from ihl.visualize import show_ground_truth

    _require_file(ann, "annotation file")
    if not image_dir.is_dir():
        _fail(f"image folder not found: {image_dir}")
    try:
        written = show_ground_truth(ann, image_dir, out, dataset=dataset.value, limit=limit)
    except USER_ERRORS as err:
        _fail(str(err))
    typer.echo(f"wrote {len(written)} images to {out}")


@data_app.command("check")
def data_check_cmd(
    root: Annotated[Path, typer.Argument(help="Dataset root in the standard layout.")],
    dataset: Annotated[Dataset, typer.Option(help="Layout of ROOT.")] = Dataset.coco,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Only check that images exist (fast).")
    ] = False,
) -> None:
    """List every problem in a dataset; exit 1 if there is any, 0 if it is clean."""
    from ihl.data.coco import validate_coco
    from ihl.data.mpii import validate_mpii

    if not root.is_dir():
        _fail(f"dataset folder not found: {root}")
    validate = validate_coco if dataset is Dataset.coco else validate_mpii
    problems = validate(root, decode_images=not no_decode)
    for problem in problems:
        typer.echo(problem)
    checked = "files checked" if no_decode else "images decoded"
    if problems:
        typer.secho(
            f"{len(problems)} problem(s) in {dataset.value} dataset {root} ({checked})",
            fg=typer.colors.RED,
        )
        raise typer.Exit(1)
    typer.echo(f"no problems in {dataset.value} dataset {root} ({checked})")


@data_app.command("add")
def data_add_cmd(
    name: Annotated[str, typer.Argument(help="coco or mpii: the folder becomes data/NAME.")],
    path: Annotated[Path, typer.Argument(help="Dataset folder in the standard layout.")],
    move: Annotated[bool, typer.Option(help="Move PATH instead of copying it.")] = False,
    replace: Annotated[
        bool, typer.Option(help="Replace an existing data/NAME (a new version of it).")
    ] = False,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Only check that images exist (fast).")
    ] = False,
) -> None:
    """Check a COCO or MPII folder, place it at data/NAME and track it with DVC (`dvc add`)."""
    from ihl.datastore import DataStoreError, add_dataset

    try:
        dvc_file = add_dataset(
            name, path, move=move, replace=replace, decode_images=not no_decode, progress=True
        )
    except (DataStoreError, DatasetError) as err:
        _fail(str(err))
    typer.echo(
        f"data/{name} is tracked by {dvc_file}: commit that file with Git to record this "
        "version, and upload the data with `ihl data push`"
    )


RemoteOpt = Annotated[
    str | None, typer.Option("--remote", "-r", help="DVC remote; default: the project's default.")
]
TargetsArg = Annotated[
    list[str] | None,
    typer.Argument(help=".dvc files or tracked paths, e.g. data/coco.dvc; default: everything."),
]


@data_app.command("push")
def data_push_cmd(targets: TargetsArg = None, remote: RemoteOpt = None) -> None:
    """Upload tracked data to the DVC remote (`dvc push`) once the remote checks out."""
    _transfer("push", targets, remote)


@data_app.command("pull")
def data_pull_cmd(targets: TargetsArg = None, remote: RemoteOpt = None) -> None:
    """Download tracked data from the DVC remote (`dvc pull`) once the remote checks out."""
    _transfer("pull", targets, remote)


def _transfer(direction: str, targets: list[str] | None, remote: str | None) -> None:
    from ihl.datastore import DataStoreError, transfer

    try:
        transfer(direction, targets or [], remote=remote)
    except DataStoreError as err:
        _fail(str(err))


@data_app.command("version")
def data_version_cmd(
    index: Annotated[Path, typer.Argument(help="index.json written by `ihl prepare`.")] = Path(
        "data/index.json"
    ),
) -> None:
    """Print the data version (dataset and content fingerprint) recorded by `ihl prepare`."""
    from ihl.data.coco import load_json

    try:
        summary = load_json(index)
    except DatasetError as err:
        _fail(f"{err}; run `ihl prepare` (the pipeline's prepare stage) first")
    if not isinstance(summary, dict) or "version" not in summary:
        _fail(f"{index}: not an index written by `ihl prepare` (no version)")
    typer.echo(summary["version"])


# Commands kept in their own modules register themselves on `app` when imported.
from ihl import cli_pipeline, cli_registry, cli_serving  # noqa: E402, F401

if __name__ == "__main__":
    app()
