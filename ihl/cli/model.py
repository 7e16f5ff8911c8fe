"""Model tools: the presets, a model's size, and converting the reference's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from ihl import config as config_mod
from ihl.cli.common import ConfigArg, fail, load_config

config_app = typer.Typer(help="Configs: show one resolved.", no_args_is_help=True)


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
        typer.echo(f"params {info['params'] / 1e6:.2f} M, {info['gmacs']:.2f} GMACs at {w}x{h}")


@config_app.command("show")
def config_show_cmd(
    preset: ConfigArg,
    world_size: Annotated[
        int, typer.Option(min=1, help="Devices the run would use (torchrun's WORLD_SIZE).")
    ] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value (repeatable): train.scale_lr=true."),
    ] = None,
) -> None:
    """Print a config with every default filled in, as YAML, plus effective_lr: the learning
    rate the optimizer starts from (before warm-up) at WORLD_SIZE devices."""
    cfg = load_config(preset, overrides)
    typer.echo(yaml.safe_dump(config_mod.resolved(cfg, world_size), sort_keys=False), nl=False)


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
    """Convert a reference IHL checkpoint (an MMEngine .pth: backbone.*, head.final_layer.*,
    head.simplebaseline_head.*, the flow's head.loss_module....flow_model.*) into this project's
    format. Nothing the file pickles is run: only tensors and plain containers are rebuilt."""
    from ihl.checkpoint import CheckpointError, import_checkpoint

    cfg = load_config(config)
    try:
        out = import_checkpoint(src, dst, cfg, tuple(drop))
    except CheckpointError as err:
        fail(str(err))
    typer.echo(f"wrote {out}")
