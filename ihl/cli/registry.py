"""`ihl registry`: model versions on S3 in KServe's storage layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import USER_ERRORS, fail, print_table
from ihl.files import write_text

app = typer.Typer(
    help="Model registry on S3 (KServe storage layout): push, list, pull, abandon, promote, "
    "protect, register, manifest.",
    no_args_is_help=True,
)

# Rich reads "[/PREFIX]" as a closing markup tag unless the bracket is escaped.
UriArg = Annotated[str, typer.Argument(help="Registry root, s3://BUCKET\\[/PREFIX].")]
NameArg = Annotated[str, typer.Argument(help="Model name, e.g. ihl.")]
VersionArg = Annotated[str, typer.Argument(help="Version, or an alias such as production.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(help="S3 endpoint URL; default: AWS_ENDPOINT_URL(_S3) or AWS itself."),
]
PinOpt = Annotated[
    str | None,
    typer.Option(
        "--sha256",
        help="Pin the version: its manifest's sha256 (`list --json`: manifest_sha256); a "
        "version rewritten since, archive and manifest alike, is refused.",
    ),
]


def _progress(label: str, total: int):
    """A byte progress bar per file on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    if total <= 0:
        return lambda n: None
    bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=False, disable=None)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def _errors():
    from ihl.edge.registry.store import RegistryError

    return (*USER_ERRORS, RegistryError)


@app.command("push")
def push_cmd(
    export_dir: Annotated[Path, typer.Argument(help="Folder written by `ihl export`.")],
    uri: UriArg,
    name: NameArg,
    version: Annotated[str, typer.Argument(help="New version; versions are never overwritten.")],
    endpoint_url: EndpointOpt = None,
) -> None:
    """Upload an export folder as URI/NAME/VERSION (refused if that version exists)."""
    from ihl.edge.registry import store

    try:
        pushed = store.push(
            export_dir, uri, name, version, endpoint_url=endpoint_url, progress=_progress
        )
    except _errors() as err:
        fail(str(err))
    typer.echo(pushed)


@app.command("list")
def list_cmd(
    uri: UriArg,
    name: Annotated[str | None, typer.Argument(help="Model name; omit to list the models.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """List the models, or one model's versions with their aliases."""
    from ihl.edge.registry import store

    try:
        if name is None:
            found = store.list_models(uri, endpoint_url=endpoint_url)
        else:
            found = store.list_versions(uri, name, endpoint_url=endpoint_url)
    except _errors() as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps(found, indent=2))
    elif not found:
        fail(f"no {'models' if name is None else f'versions of model {name!r}'} in {uri}")
    elif name is None:
        for model in found:
            typer.echo(model)
    else:
        width = max(len("version"), *(len(v["version"]) for v in found))
        typer.echo(f"{'version':<{width}}  {'pushed':<20}  {'size':>9}  aliases")
        for v in found:
            pushed = v["pushed_at"] or "INCOMPLETE (no manifest)"
            size = f"{v['size'] / 1e6:.1f} MB" if v["size"] >= 1e5 else f"{v['size'] / 1e3:.1f} kB"
            aliases = ", ".join(v["aliases"])
            typer.echo(f"{v['version']:<{width}}  {pushed:<20}  {size:>9}  {aliases}".rstrip())


@app.command("pull")
def pull_cmd(
    uri: UriArg,
    name: NameArg,
    version: VersionArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="New folder for the version (must not exist).")
    ],
    sha256: PinOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Download a version, checking every file's sha256 against its manifest."""
    from ihl.edge.registry import store

    try:
        dest = store.pull(
            uri, name, version, out,
            manifest_sha256=sha256, endpoint_url=endpoint_url, progress=_progress,
        )  # fmt: skip
    except _errors() as err:
        fail(str(err))
    typer.echo(dest)


@app.command("abandon")
def abandon_cmd(
    uri: UriArg,
    name: NameArg,
    version: Annotated[str, typer.Argument(help="The incomplete version.")],
    older_than: Annotated[
        float,
        typer.Option(
            min=0, help="Minutes since the push started, below which it may still be running."
        ),
    ] = 60.0,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Remove an interrupted push: a version without manifest (complete versions are kept)."""
    from ihl.edge.registry import store

    try:
        deleted = store.abandon(
            uri, name, version, older_than_minutes=older_than, endpoint_url=endpoint_url
        )
    except _errors() as err:
        fail(str(err))
    typer.echo(f"removed {len(deleted)} objects of incomplete version {name}/{version}")


@app.command("promote")
def promote_cmd(
    uri: UriArg,
    name: NameArg,
    version: VersionArg,
    alias: Annotated[str, typer.Option(help="Alias to point at VERSION.")] = "production",
    endpoint_url: EndpointOpt = None,
) -> None:
    """Point an alias (default: production) at a version."""
    from ihl.edge.registry import store

    try:
        previous = store.promote(uri, name, version, alias, endpoint_url=endpoint_url)
        target = store.resolve(uri, name, alias, endpoint_url=endpoint_url)
    except _errors() as err:
        fail(str(err))
    typer.echo(f"{name} {alias}: {previous or '(none)'} -> {target}")


@app.command("protect")
def protect_cmd(uri: UriArg, endpoint_url: EndpointOpt = None) -> None:
    """Put a bucket policy under which no registry object can be replaced or deleted, by any
    key (aliases excepted). For a bucket that holds only the registry; afterwards abandon
    is refused too."""
    from ihl.edge.registry import store

    try:
        policy = store.protect(uri, endpoint_url=endpoint_url)
    except _errors() as err:
        fail(str(err))
    typer.echo(json.dumps(policy, indent=2))


def _management_key(token: str | None, key_file: Path | None) -> str | None:
    if token or key_file is None:
        return token
    try:
        return json.loads(key_file.read_text())["management"]["key"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        fail(f"--key-file {key_file}: expected TorchServe's key_file.json ({err})")


@app.command("register")
def register_cmd(
    uri: UriArg,
    name: NameArg,
    version: VersionArg,
    model_store: Annotated[
        Path, typer.Option(help="The running TorchServe's model store (its model_store folder).")
    ],
    management_url: Annotated[
        str, typer.Option(help="TorchServe management API (management_address).")
    ] = "http://127.0.0.1:8081",
    token: Annotated[
        str | None,
        typer.Option(envvar="IHL_TORCHSERVE_TOKEN", help="TorchServe management key."),
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="TorchServe's key_file.json (its management key is used).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Initial workers.")] = 1,
    set_default: Annotated[
        bool, typer.Option(help="Make it the default version of its model name.")
    ] = False,
    sha256: PinOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Pull a version and register it with a running TorchServe (management API)."""
    from ihl.edge.registry import torchserve

    try:
        result = torchserve.register(
            uri,
            name,
            version,
            management_url=management_url,
            model_store=model_store,
            token=_management_key(token, key_file),
            workers=workers,
            set_default=set_default,
            manifest_sha256=sha256,
            endpoint_url=endpoint_url,
            progress=_progress,
        )
    except _errors() as err:
        fail(str(err))
    print_table(result)


@app.command("manifest")
def manifest_cmd(
    uri: UriArg,
    name: NameArg,
    version: VersionArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the YAML here; default: stdout.")
    ] = None,
    service_name: Annotated[
        str | None, typer.Option(help="InferenceService name; default: NAME.")
    ] = None,
    gpus: Annotated[int, typer.Option(min=0, help="nvidia.com/gpu per replica (0: CPU).")] = 0,
    service_account: Annotated[
        str, typer.Option(help="Service account bound to the S3 credentials secret.")
    ] = "ihl-s3-read",
    image: Annotated[
        str | None, typer.Option(help="Serve image; default: the project's serve image.")
    ] = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """KServe InferenceService YAML for a version (an alias is resolved to its version)."""
    import yaml

    from ihl.edge.registry import kserve

    try:
        manifest = kserve.kserve_manifest(
            uri,
            name,
            version,
            service_name=service_name,
            gpus=gpus,
            service_account=service_account,
            image=image,
            endpoint_url=endpoint_url,
        )
    except _errors() as err:
        fail(str(err))
    text = yaml.safe_dump(manifest, sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text(out, text)
        typer.echo(out)
