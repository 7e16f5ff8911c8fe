"""`ihl pipeline`: compile, submit or run locally the Kubeflow pipeline.

The pipeline lives in ``pipelines/`` and ``components/`` at the top of the repository,
shipped in the wheel beside ``ihl/``; these commands import them, and kfp, only when
they run. ``submit`` and ``run-local`` take one option per run parameter, made from
``pipelines.parameters.PARAMETERS``.
"""

from __future__ import annotations

import functools
import inspect
import json
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from ihl.cli.common import fail, parse_overrides, parse_pairs, print_table
from ihl.files import write_text
from pipelines.parameters import PARAMETERS
from pipelines.settings import ClusterSettings, Toleration

app = typer.Typer(
    help="Kubeflow pipeline: compile to YAML, submit to a cluster, or run locally.",
    no_args_is_help=True,
)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value (repeatable): train.batch_size=32."),
]


def run_parameter_options(*exclude: str):
    """Give a command one option per run parameter (``--gpus`` for num_gpus and ``--set`` for
    overrides) but those in ``exclude``; it receives the values given as ``arguments``
    (parameter names, ``overrides`` parsed)."""

    def decorate(command):
        taken = [p for p in PARAMETERS if p.name not in exclude]
        signature = inspect.signature(command, eval_str=True)
        extra = [
            inspect.Parameter(
                p.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, p.flag, help=_help(p)),
                annotation=list[str] | None if p.type is dict else p.type | None,
            )
            for p in taken
        ]

        @functools.wraps(command)
        def run(**values):
            given = {p.name: values.pop(p.name) for p in taken}
            if given.get("overrides"):
                given["overrides"] = parse_overrides(given["overrides"])
            arguments = {key: value for key, value in given.items() if value not in (None, [])}
            return command(arguments=arguments, **values)

        kept = [p for p in signature.parameters.values() if p.name != "arguments"]
        run.__signature__ = signature.replace(parameters=kept + extra)
        run.__annotations__ = {p.name: p.annotation for p in kept + extra}
        return run

    return decorate


def _help(parameter) -> str:
    if parameter.type is dict:
        return parameter.help
    return f"{parameter.help} [default: {parameter.default!r}]"


def _check(arguments: dict[str, Any], compiled_gpus: int | None = None) -> None:
    """Refuse, in one line, run parameters the pipeline would only fail on minutes later.
    ``compiled_gpus``: the GPU count a compiled package requests, the only num_gpus it takes."""
    from pipelines.training import check_arguments

    try:
        check_arguments(arguments, compiled_gpus)
    except ValueError as err:
        fail(str(err))


@app.command("compile")
def compile_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pipeline YAML to write.")] = Path(
        "ihl-pipeline.yaml"
    ),
    image: Annotated[
        str | None,
        typer.Option(help="Default of the image parameter; pin a digest in production."),
    ] = None,
    gpus: Annotated[
        int,
        typer.Option(
            min=0, help="GPUs of the train task, a literal in the pipeline (runs take no other)."
        ),
    ] = 1,
    accelerator: Annotated[str, typer.Option(help="GPU resource name.")] = "nvidia.com/gpu",
    cpu: Annotated[
        str | None, typer.Option(help="CPU request of the GPU tasks (default: 10 per GPU).")
    ] = None,
    cpu_limit: Annotated[
        str | None, typer.Option(help="CPU limit of the GPU tasks (default: 20 per GPU).")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory request of the GPU tasks (default: 32Gi per GPU).")
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="Memory limit of the GPU tasks (default: 64Gi per GPU).")
    ] = None,
    shm_size: Annotated[
        str | None, typer.Option(help="Memory-backed /dev/shm (default: 8Gi per GPU).")
    ] = None,
    node_selector: Annotated[
        list[str] | None,
        typer.Option(
            help="GPU node label KEY=VALUE (repeatable) (default: none, the GPU request places "
            "the pods; e.g. nvidia.com/gpu.present=true)."
        ),
    ] = None,
    toleration: Annotated[
        list[str] | None,
        typer.Option(
            help="Taint to tolerate KEY[=VALUE][:EFFECT] (repeatable) "
            "(default: nvidia.com/gpu:NoSchedule)."
        ),
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries of the train task.")] = 3,
    s3_secret: Annotated[
        str, typer.Option(help="Secret with the S3 keys for DVC and the registry ('': none).")
    ] = "ihl-s3",
) -> None:
    """Write the cluster pipeline as KFP YAML (upload it in the Kubeflow UI or use `submit`)."""
    from pipelines.training import compile_pipeline

    settings: dict[str, Any] = {
        "node_selector": parse_pairs(node_selector or [], "--node-selector")
    }
    if toleration:
        try:
            settings["tolerations"] = tuple(Toleration.parse(text) for text in toleration)
        except ValueError as err:
            fail(str(err))
    try:
        cluster = ClusterSettings(
            num_gpus=gpus,
            accelerator=accelerator,
            cpu_request=cpu,
            cpu_limit=cpu_limit,
            memory_request=memory,
            memory_limit=memory_limit,
            shm_size=shm_size,
            train_retries=retries,
            s3_secret=s3_secret or None,
            **settings,
        )
        path = compile_pipeline(out, cluster, image)
    except ValueError as err:
        fail(str(err))
    typer.echo(f"wrote {path}")


def _check_reachable(host: str) -> None:
    """Fail in one line, before kfp.Client's slow retries, when nothing answers at ``host``.

    Any HTTP answer (even 401 or 404) means something is listening; only a failed
    connection is refused here.
    """
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        fail(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host "
            "(e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` "
            "then --host http://localhost:8080)"
        )


@app.command("submit")
@run_parameter_options()
def submit_cmd(
    host: Annotated[
        str,
        typer.Option(envvar="KF_PIPELINES_ENDPOINT", help="Kubeflow Pipelines API endpoint URL."),
    ],
    package: Annotated[
        Path | None,
        typer.Option(help="Compiled pipeline YAML (default: compile with the default settings)."),
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment to file the run under.")] = "ihl",
    run_name: Annotated[str | None, typer.Option(help="Run name (default: kfp's).")] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Kubeflow profile namespace (multi-user installs).")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Image for every task; pin a digest (REPO@sha256:...).")
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            help="Let KFP reuse cached task outputs (off by default: the data volume's content "
            "is not in any cache key); needs an image pinned by digest.",
        ),
    ] = False,
    arguments: dict[str, Any] | None = None,
) -> None:
    """Start a pipeline run on a Kubeflow cluster."""
    from ihl.edge.container_images import image as default_image
    from pipelines.training import compiled_gpus

    if package is not None and not package.is_file():
        fail(f"pipeline package not found: {package}")
    try:
        requested = None if package is None else compiled_gpus(package)
    except ValueError as err:
        fail(str(err))
    arguments = {**arguments, "image": image} if image else dict(arguments)
    _check(arguments, requested)
    if cache and "@sha256:" not in (image or default_image("train")):
        fail("--cache needs --image pinned by digest (REPOSITORY@sha256:...): a tag can move")
    _check_reachable(host)

    import tempfile

    import kfp
    from kfp_server_api.exceptions import ApiException

    from pipelines.training import compile_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        cluster = ClusterSettings(num_gpus=arguments.get("num_gpus", 1))
        path = package or compile_pipeline(Path(scratch) / "ihl-pipeline.yaml", cluster)
        try:
            client = kfp.Client(host=host, namespace=namespace or "kubeflow")
            run = client.create_run_from_pipeline_package(
                str(path),
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                enable_caching=cache,
            )
        except ApiException as err:
            fail(f"Kubeflow Pipelines at {host} refused the run: {err.status} {err.reason}")
    typer.echo(f"submitted run {run.run_id} (caching {'on' if cache else 'off'})")
    typer.echo(f"{host.rstrip('/')}/#/runs/details/{run.run_id}")


@app.command("run-local")
@run_parameter_options("num_gpus", "data_pvc")
def run_local_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the data volume and task outputs.")
    ] = Path("runs/pipeline-local"),
    gpus: Annotated[int, typer.Option(min=0, help="GPUs for training (0: CPU).")] = 0,
    synth_train: Annotated[
        int, typer.Option(min=1, help="Synthetic training images, when they are generated.")
    ] = 64,
    synth_val: Annotated[
        int, typer.Option(min=1, help="Synthetic validation images, when they are generated.")
    ] = 16,
    arguments: dict[str, Any] | None = None,
) -> None:
    """Run the whole pipeline on this machine with kfp.local (one subprocess per task).

    OUT/volume stands in for the data volume. With the synthetic dataset and no
    --data-path, the data is generated there first (once).
    """
    volume = out.resolve() / "volume"
    arguments = {**arguments, "num_gpus": gpus}
    dvc_source = arguments.get("data_source") == "dvc"
    if "data_path" in arguments and not dvc_source:
        arguments["data_path"] = str(Path(arguments["data_path"]).resolve())
    _check(arguments)
    if (
        arguments.get("dataset", "synth") == "synth"
        and "data_path" not in arguments
        and not dvc_source
    ):
        synth = volume / "synth"
        if not synth.is_dir():
            from ihl.data.synth import make_coco_synth

            typer.echo(f"generating the synthetic dataset in {synth}")
            make_coco_synth(synth, num_train=synth_train, num_val=synth_val)
        arguments["data_path"] = str(synth)

    from kfp import local

    from pipelines.training import build_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out.resolve() / "tasks")
    )
    with warnings.catch_warnings():
        # kfp.local warns that the tasks' image is not a Python image; here the project's
        # environment is the image's, so the warning does not apply.
        warnings.filterwarnings("ignore", "You may be attemp", RuntimeWarning)
        try:
            task = build_pipeline(None, volume=str(volume))(**arguments)
        except RuntimeError as err:
            fail(f"{err} (its log is above)")
    metrics, report, package = (task.outputs[k] for k in ("metrics", "report", "package"))
    print_table(json.loads(Path(metrics.path).read_text()))
    typer.echo(f"metrics: {metrics.path}")
    typer.echo(f"report:  {report.path}")
    typer.echo(f"model:   {Path(package.path) / package.metadata['archive']}")
    if task.outputs["registered"]:
        typer.echo(f"registered: {task.outputs['registered']}")


@app.command("pytorchjob")
def pytorchjob_cmd(
    name: Annotated[str, typer.Option(help="Job name; the run folder is /data/runs/NAME.")],
    data_path: Annotated[str, typer.Option(help="Dataset folder on the data volume.")],
    nodes: Annotated[int, typer.Option(min=1, help="Nodes (pods), one Master and Workers.")] = 2,
    gpus_per_node: Annotated[int, typer.Option(min=1, help="GPUs (processes) per node.")] = 8,
    preset: Annotated[str, typer.Option(help="Config preset.")] = "coco_res50",
    image: Annotated[
        str | None,
        typer.Option(help="Image (default: ihl.edge.container_images train); pin a digest."),
    ] = None,
    data_pvc: Annotated[str, typer.Option(help="PVC holding the data volume.")] = "ihl-data",
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace.")] = None,
    overrides: SetOpt = None,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="torchrun restarts of the worker group per pod.")
    ] = 3,
    rdma_resource: Annotated[
        str | None,
        typer.Option(help="RDMA device resource to request per pod, e.g. rdma/ib (default: none)."),
    ] = None,
    nccl: Annotated[
        list[str] | None,
        typer.Option(help="NCCL environment KEY=VALUE (repeatable), e.g. NCCL_SOCKET_IFNAME=eth0."),
    ] = None,
    node_selector: Annotated[
        list[str] | None,
        typer.Option(
            help="Node label KEY=VALUE (repeatable) (default: none, the GPU request places "
            "the pods; e.g. nvidia.com/gpu.present=true)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Manifest file (default: stdout).")
    ] = None,
) -> None:
    """Write a Kubeflow Training Operator PyTorchJob that trains on several GPU nodes
    (`kubectl apply -f` it)."""
    import yaml

    from ihl import config as config_mod
    from ihl.edge.container_images import image as default_image
    from pipelines.pytorchjob import pytorchjob_manifest
    from pipelines.settings import ClusterSettings

    try:
        manifest = pytorchjob_manifest(
            name,
            image=image or default_image("train"),
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            preset=preset,
            data_path=data_path,
            overrides=parse_overrides(overrides or []),
            data_pvc=data_pvc,
            namespace=namespace,
            max_restarts=max_restarts,
            rdma_resource=rdma_resource,
            nccl_env=parse_pairs(nccl or [], "--nccl"),
            cluster=ClusterSettings(
                node_selector=parse_pairs(node_selector or [], "--node-selector")
            ),
        )
    except config_mod.ConfigError as err:
        fail(str(err))
    text = yaml.safe_dump(manifest, sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_text(out, text)
    typer.echo(f"wrote {out}")
