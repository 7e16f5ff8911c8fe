"""Model tools: the presets, a model's size, and converting the reference's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ihl import config as config_mod
from ihl.cli.common import ConfigArg, fail, load_config


def presets() -> None:
    """List the configuration presets."""
    for name in config_mod.preset_names():
        typer.echo(name)


def model_info_cmd(
    preset: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters and multiply-adds (GMACs) of a configured model at its input size."""
    from ihl.model_info import model_info

    info = model_info(load_config(preset))
    if as_json:
        typer.echo(json.dumps(info))
    else:
        w, h = info["input_size"]
        typer.echo(f"params {info['params'] / 1e6:.2f} M, {info['gflops']:.2f} GMACs at {w}x{h}")


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

    cfg = load_config(config)
    try:
        out = import_checkpoint(src, dst, cfg, tuple(drop))
    except CheckpointError as err:
        fail(str(err))
    typer.echo(f"wrote {out}")
