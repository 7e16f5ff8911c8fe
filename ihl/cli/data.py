"""`ihl data`: check a dataset, track it with DVC, push and pull it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import Dataset, fail
from ihl.data.errors import DatasetError

app = typer.Typer(
    help="Dataset tools: check a dataset, track it with DVC, push and pull it.",
    no_args_is_help=True,
)


@app.command("check")
def data_check_cmd(
    root: Annotated[Path, typer.Argument(help="Dataset root in the standard layout.")],
    dataset: Annotated[Dataset, typer.Option(help="Layout of ROOT.")] = Dataset.coco,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Only check that images exist (fast).")
    ] = False,
) -> None:
    """List every problem in a dataset; exit 1 if there is any, 0 if it is clean."""
    from ihl.data.coco_format import validate_coco
    from ihl.data.crowdpose_format import validate_crowdpose
    from ihl.data.mpii_format import validate_mpii

    if not root.is_dir():
        fail(f"dataset folder not found: {root}")
    validate = {
        Dataset.coco: validate_coco,
        Dataset.mpii: validate_mpii,
        Dataset.crowdpose: validate_crowdpose,
    }[dataset]
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


@app.command("add")
def data_add_cmd(
    name: Annotated[
        str, typer.Argument(help="coco, mpii or crowdpose: the folder becomes data/NAME.")
    ],
    path: Annotated[Path, typer.Argument(help="Dataset folder in the standard layout.")],
    move: Annotated[bool, typer.Option(help="Move PATH instead of copying it.")] = False,
    replace: Annotated[
        bool, typer.Option(help="Replace an existing data/NAME (a new version of it).")
    ] = False,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Only check that images exist (fast).")
    ] = False,
) -> None:
    """Check a COCO, MPII or CrowdPose folder, place it at data/NAME and track it with DVC
    (`dvc add`)."""
    from ihl.edge.datastore import DataStoreError, add_dataset

    try:
        dvc_file = add_dataset(
            name, path, move=move, replace=replace, decode_images=not no_decode, progress=True
        )
    except (DataStoreError, DatasetError) as err:
        fail(str(err))
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


@app.command("push")
def data_push_cmd(targets: TargetsArg = None, remote: RemoteOpt = None) -> None:
    """Upload tracked data to the DVC remote (`dvc push`) once the remote checks out."""
    _transfer("push", targets, remote)


@app.command("pull")
def data_pull_cmd(targets: TargetsArg = None, remote: RemoteOpt = None) -> None:
    """Download tracked data from the DVC remote (`dvc pull`) once the remote checks out."""
    _transfer("pull", targets, remote)


def _transfer(direction: str, targets: list[str] | None, remote: str | None) -> None:
    from ihl.edge.datastore import DataStoreError, transfer

    try:
        transfer(direction, targets or [], remote=remote)
    except DataStoreError as err:
        fail(str(err))


@app.command("version")
def data_version_cmd(
    index: Annotated[Path, typer.Argument(help="index.json written by `ihl prepare`.")] = Path(
        "data/index.json"
    ),
) -> None:
    """Print the data version (dataset and content fingerprint) recorded by `ihl prepare`."""
    from ihl.data.coco_format import load_json

    try:
        summary = load_json(index)
    except DatasetError as err:
        fail(f"{err}; run `ihl prepare` (the pipeline's prepare stage) first")
    if not isinstance(summary, dict) or "version" not in summary:
        fail(f"{index}: not an index written by `ihl prepare` (no version)")
    typer.echo(summary["version"])
