"""`ihl pipeline`: compile, submit or run locally the Kubeflow pipeline.

The pipeline itself lives in ``pipelines/`` and ``components/`` at the top of the
repository (it is compiled from a checkout, not from the installed image), so
these commands import them, and kfp, only when they run.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from ihl.cli.common import fail, parse_overrides, print_table
from ihl.files import write_text

app = typer.Typer(
    help="Kubeflow pipeline: compile to YAML, submit to a cluster, or run locally.",
    no_args_is_help=True,
)

DatasetOpt = Annotated[
    str | None, typer.Option(help="synth, coco, mpii or crowdpose (default: synth).")
]
PresetOpt = Annotated[str | None, typer.Option(help="Config preset (default: sample).")]
EpochsOpt = Annotated[
    int | None, typer.Option(min=0, help="Training epochs (0: the preset's) (default: 0).")
]
DataSourceOpt = Annotated[
    str | None, typer.Option(help="volume (DATA_PATH on the data volume) or dvc (default: volume).")
]
DataPathOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset folder: on the data volume, or inside the DVC repository (default: synth)."
    ),
]
DvcRepoOpt = Annotated[str | None, typer.Option(help="Git URL of the DVC repository (dvc source).")]
DvcRevOpt = Annotated[str | None, typer.Option(help="Git revision of the DVC repository.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value (repeatable): train.batch_size=32."),
]
RegistryOpt = Annotated[
    str | None, typer.Option(help="Model registry s3://bucket/prefix; none: not registered.")
]
ModelNameOpt = Annotated[str | None, typer.Option(help="Registered model name (default: ihl).")]
ModelVersionOpt = Annotated[
    str | None, typer.Option(help="Model version (default: the pipeline run's id).")
]


def _arguments(compiled_gpus: int | None = None, **given: Any) -> dict[str, Any]:
    """The pipeline parameters given on the command line, checked; the rest keep their defaults.

    Parameter names are the pipeline's; ``overrides`` is the list of ``--set`` items.
    ``compiled_gpus``: the GPU count a compiled package requests, the only num_gpus it takes.
    """
    from pipelines.training import check_arguments

    if given.get("overrides"):
        given["overrides"] = parse_overrides(given["overrides"])
    arguments = {key: value for key, value in given.items() if value not in (None, [])}
    try:
        check_arguments(arguments, compiled_gpus)
    except ValueError as err:
        fail(str(err))
    return arguments


def _import_pipelines() -> None:
    try:
        import pipelines.training  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name not in ("pipelines", "components"):
            raise
        fail(
            f"the {err.name}/ folder is not importable: run `ihl pipeline` from a checkout of "
            "the repository (pipelines/ and components/ are not in the installed package)"
        )


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
    _import_pipelines()
    from pipelines.settings import ClusterSettings, Toleration
    from pipelines.training import compile_pipeline

    settings: dict[str, Any] = {"node_selector": _node_selector(node_selector)}
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


def _node_selector(items: list[str] | None) -> dict[str, str]:
    """``--node-selector KEY=VALUE`` options as labels."""
    pairs = [item.partition("=") for item in items or []]
    bad = [key + sep + value for key, sep, value in pairs if not (key and sep and value)]
    if bad:
        fail(f"--node-selector {bad[0]!r}: expected KEY=VALUE")
    return {key: value for key, _, value in pairs}


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
    dataset: DatasetOpt = None,
    preset: PresetOpt = None,
    epochs: EpochsOpt = None,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="GPUs for training (default: 1, or the count --package was compiled for).",
        ),
    ] = None,
    data_source: DataSourceOpt = None,
    data_path: DataPathOpt = None,
    dvc_repo: DvcRepoOpt = None,
    dvc_rev: DvcRevOpt = None,
    data_pvc: Annotated[
        str | None, typer.Option(help="PVC holding the data volume (default: ihl-data).")
    ] = None,
    overrides: SetOpt = None,
    registry_uri: RegistryOpt = None,
    model_name: ModelNameOpt = None,
    model_version: ModelVersionOpt = None,
) -> None:
    """Start a pipeline run on a Kubeflow cluster."""
    _import_pipelines()
    from ihl.edge.container_images import image as default_image
    from pipelines.training import compiled_gpus

    if package is not None and not package.is_file():
        fail(f"pipeline package not found: {package}")
    try:
        requested = None if package is None else compiled_gpus(package)
    except ValueError as err:
        fail(str(err))
    arguments = _arguments(
        requested,
        dataset=dataset,
        preset=preset,
        epochs=epochs,
        num_gpus=gpus,
        image=image,
        data_source=data_source,
        data_path=data_path,
        dvc_repo=dvc_repo,
        dvc_rev=dvc_rev,
        data_pvc=data_pvc,
        overrides=overrides,
        registry_uri=registry_uri,
        model_name=model_name,
        model_version=model_version,
    )
    if cache and "@sha256:" not in (image or default_image("train")):
        fail("--cache needs --image pinned by digest (REPOSITORY@sha256:...): a tag can move")
    _check_reachable(host)

    import tempfile

    import kfp
    from kfp_server_api.exceptions import ApiException

    from pipelines.settings import ClusterSettings
    from pipelines.training import compile_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        cluster = ClusterSettings(num_gpus=1 if gpus is None else gpus)
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
def run_local_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the data volume and task outputs.")
    ] = Path("runs/pipeline-local"),
    dataset: DatasetOpt = None,
    preset: PresetOpt = None,
    epochs: EpochsOpt = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs for training (0: CPU).")] = 0,
    data_source: DataSourceOpt = None,
    data_path: DataPathOpt = None,
    dvc_repo: DvcRepoOpt = None,
    dvc_rev: DvcRevOpt = None,
    overrides: SetOpt = None,
    registry_uri: RegistryOpt = None,
    model_name: ModelNameOpt = None,
    model_version: ModelVersionOpt = None,
    synth_train: Annotated[
        int, typer.Option(min=1, help="Synthetic training images, when they are generated.")
    ] = 64,
    synth_val: Annotated[
        int, typer.Option(min=1, help="Synthetic validation images, when they are generated.")
    ] = 16,
) -> None:
    """Run the whole pipeline on this machine with kfp.local (one subprocess per task).

    OUT/volume stands in for the data volume. With the synthetic dataset and no
    --data-path, the data is generated there first (once).
    """
    _import_pipelines()
    volume = out.resolve() / "volume"
    if data_path and data_source != "dvc":
        data_path = str(Path(data_path).resolve())
    arguments = _arguments(
        dataset=dataset,
        preset=preset,
        epochs=epochs,
        num_gpus=gpus,
        data_source=data_source,
        data_path=data_path,
        dvc_repo=dvc_repo,
        dvc_rev=dvc_rev,
        overrides=overrides,
        registry_uri=registry_uri,
        model_name=model_name,
        model_version=model_version,
    )
    if (dataset or "synth") == "synth" and not data_path and data_source != "dvc":
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
    _import_pipelines()
    import yaml

    from ihl import config as config_mod
    from ihl.edge.container_images import image as default_image
    from pipelines.pytorchjob import pytorchjob_manifest
    from pipelines.settings import ClusterSettings

    if preset not in config_mod.preset_names():
        fail(f"unknown preset {preset!r}; presets: {', '.join(config_mod.preset_names())}")
    pairs = [item.partition("=") for item in nccl or []]
    bad = [key + sep + value for key, sep, value in pairs if not (key and sep)]
    if bad:
        fail(f"--nccl {bad[0]!r}: expected KEY=VALUE")
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
        nccl_env={key: value for key, _, value in pairs},
        cluster=ClusterSettings(node_selector=_node_selector(node_selector)),
    )
    text = yaml.safe_dump(manifest, sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_text(out, text)
    typer.echo(f"wrote {out}")
