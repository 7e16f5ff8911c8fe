"""What every command module shares: error reporting, config loading, result printing."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from ihl import config as config_mod
from ihl.data.errors import DatasetError

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
    crowdpose = "crowdpose"


class BoxSource(StrEnum):
    detections = "detections"
    gt = "gt"
    detector = "detector"


class Runtime(StrEnum):
    torch = "torch"
    onnx = "onnx"


RuntimeOpt = Annotated[
    Runtime,
    typer.Option(help="Run the pose model in eager PyTorch or exported to ONNX Runtime (CPU)."),
]


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Pose model forward in fp32, or under bf16/fp16 autocast (coordinates stay fp32); "
        "fp16 needs CUDA, bf16 on a CPU without AVX512-BF16 is emulated and slow."
    ),
]
DetectorOpt = Annotated[
    Path | None,
    typer.Option(
        help="Person detector file (`ihl detector train`); default: the checkpoint config's "
        "detector section (torchvision weights or a file)."
    ),
]


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def load_config(
    name_or_path: str,
    sets: list[str] | None = None,
    params: Path | None = None,
    sections: tuple[str, ...] = (),
) -> config_mod.Config:
    """The config of a preset or YAML file (``config.resolve``) with ``--set`` items over it;
    with ``params`` (params.yaml) its dataset and the changes its ``sections`` make first, as
    the DVC stage reading them has it."""
    from ihl.edge.params import params_config

    overrides = parse_overrides(sets or [])
    try:
        if params is not None:
            return params_config(params, sections, name_or_path, overrides)
        return config_mod.resolve(name_or_path, overrides)
    except config_mod.ConfigError as err:
        fail(str(err))


def parse_pairs(items: list[str], option: str, shape: str = "KEY=VALUE") -> dict[str, str]:
    """``KEY=VALUE`` items of a repeatable option, as a mapping; a bad item names ``option``
    and the ``shape`` expected."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            fail(f"{option} {item!r}: expected {shape}")
        pairs[key.strip()] = value
    return pairs


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key.sub=value`` items; values are YAML, so numbers, booleans and lists keep
    their type."""
    overrides = {}
    shape = "dotted.key=value, e.g. --set model.head=heatmap"
    for key, text in parse_pairs(items, "--set", shape).items():
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            fail(f"--set {key}={text!r}: the value is not valid YAML: {err}")
    return overrides


def require_file(path: Path, what: str) -> None:
    if not path.is_file():
        fail(f"{what} not found: {path}")


def print_table(values: dict[str, Any]) -> None:
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
