"""`ihl registry`: model versions on S3 in KServe's storage layout."""

from __future__ import annotations

import typer

from ihl.cli import app

registry_app = typer.Typer(
    help="Model registry on S3 (KServe storage layout): push, list, pull, promote, register.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
