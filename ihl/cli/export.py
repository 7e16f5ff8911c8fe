"""`ihl export`: the TorchServe model archive, its KServe directory form and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import (
    USER_ERRORS,
    Precision,
    PrecisionOpt,
    Runtime,
    RuntimeOpt,
    fail,
    print_table,
)


def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="IHL checkpoint to serve.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Export folder: model-store/NAME.mar, config/, model_card.md."
        ),
    ],
    metrics: Annotated[
        Path | None, typer.Option(help="metrics.json from `ihl evaluate`, for the model card.")
    ] = None,
    name: Annotated[str, typer.Option(help="Model name (TorchServe and registry).")] = "ihl",
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    data_version: Annotated[
        str | None, typer.Option(help="Data version for the model card, e.g. a DVC commit.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="TorchServe workers; default: model-config.yaml.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Requests per TorchServe batch; default: model-config.yaml."),
    ] = None,
    max_batch_delay: Annotated[
        int | None,
        typer.Option(min=0, help="Milliseconds to wait for a fuller batch; default: model-config."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export folder.")] = False,
    runtime: RuntimeOpt = Runtime.torch,
    precision: PrecisionOpt = Precision.fp32,
    detector: Annotated[
        Path | None,
        typer.Option(
            help="Person detector file to pack (`ihl detector train`); default: the "
            "checkpoint config's detector when it has weights."
        ),
    ] = None,
    detector_metrics: Annotated[
        Path | None, typer.Option(help="The detector's metrics.json, for the model card.")
    ] = None,
) -> None:
    """Build the TorchServe archive (weights, config, joints, model card) and its KServe folder."""
    from ihl.checkpoint import CheckpointError
    from ihl.edge.export import ExportError, export_model

    try:
        archive = export_model(
            checkpoint,
            out,
            metrics=metrics,
            name=name,
            version=version,
            data_version=data_version,
            workers=workers,
            batch_size=batch_size,
            max_batch_delay=max_batch_delay,
            overwrite=overwrite,
            runtime=runtime.value,
            precision=precision.value,
            detector=detector,
            detector_metrics=detector_metrics,
        )
    except (*USER_ERRORS, CheckpointError, ExportError) as err:
        fail(str(err))
    print_table(
        {
            "archive": str(archive),
            "kserve config": str(out / "config" / "config.properties"),
            "model card": str(out / "model_card.md"),
        }
    )
