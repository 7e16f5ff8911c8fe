"""`ihl pipeline`: compile, submit or run locally the Kubeflow pipeline."""

from __future__ import annotations

import typer

from ihl.cli import app

pipeline_app = typer.Typer(
    help="Kubeflow pipeline: compile to YAML, submit to a cluster, or run locally.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")
