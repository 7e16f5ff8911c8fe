"""`ihl weights`: stage ImageNet weights once, for clusters that cannot download them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import fail

app = typer.Typer(
    help="ImageNet weights staged in a folder (IHL_WEIGHTS_DIR) so training needs no internet.",
    no_args_is_help=True,
)


@app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="Backbone, e.g. resnet50 or hrnet_w32.")],
    directory: Annotated[Path, typer.Argument(help="Folder to stage into, e.g. /data/weights.")],
) -> None:
    """Download NAME's ImageNet weights into DIRECTORY (kept if already there)."""
    from ihl.weights import WEIGHTS_ENV, WeightsError, fetch

    try:
        path = fetch(name, directory)
    except (WeightsError, ValueError) as err:
        fail(str(err))
    typer.echo(f"{path}: set {WEIGHTS_ENV}={directory} where training runs")
