"""`ihl export` and `ihl registry`: model archives, model cards and the S3 registry."""

from __future__ import annotations

import typer

from ihl.cli import app

registry_app = typer.Typer(
    help="Model registry on S3 (KServe storage layout): push, list, pull, promote.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
