"""The training pipeline: prepare -> train -> evaluate, and the detector -> export -> register.

``build_pipeline(ClusterSettings())`` is the pipeline for a cluster: GPU,
CPU and memory requests, node selector and tolerations on the GPU tasks, the
data volume (a PVC) mounted at /data, a memory-backed /dev/shm, retries on
training and S3 credentials from a secret. ``build_pipeline(None, volume=DIR)``
is the same graph with none of that, for ``kfp.local``, which ignores
Kubernetes settings and has no PVCs: a local folder stands in for the volume.

Caching: no task is cached by KFP unless a run asks for it. Prepare reads a
volume or a DVC revision whose content is not among its inputs (a refreshed
folder or a moved branch would be served stale), register changes the outside
world, and KFP keys a task on the identity of its upstream artifacts, so once
prepare runs nothing downstream could hit the cache anyway. The expensive result
is reused by content instead: training's run folder on the volume is named by a
hash of the resolved config, the data fingerprint that prepare computes, the GPU
count and the image reference, so the same inputs find the finished (or
half-done) run, and new data or a new image start a new one. A run that forces
KFP caching on (``ihl pipeline submit --cache``) still gets a new cache key for
a new image, since every task takes the image reference as an input; a tag
moved to new bytes keeps its reference, so ``--cache`` requires a digest.
"""

import inspect
import tempfile
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Metrics, Model

from components import detector, evaluate, export, prepare, register, train
from ihl import config
from ihl.device import CPUS_ENV
from ihl.edge.container_images import IMAGE_UID
from ihl.edge.container_images import image as default_image
from ihl.edge.urls import has_credentials, redact_url
from ihl.files import write_bytes
from ihl.prepare import DATASETS
from ihl.weights import WEIGHTS_ENV
from pipelines.parameters import DEFAULTS
from pipelines.settings import GIT_KEYS, S3_KEYS, VOLUME_MOUNT, ClusterSettings, Resources

DATA_SOURCES = ("volume", "dvc")
PIPELINE_NAME = "ihl-train"


class Outputs(NamedTuple):
    metrics: Metrics
    report: HTML
    package: Model
    registered: str


def build_pipeline(
    cluster: ClusterSettings | None = None, *, volume: str = VOLUME_MOUNT, image: str | None = None
):
    """The pipeline function: for a cluster (``cluster`` given) or for kfp.local (None).

    ``volume`` is where tasks find the data volume (the PVC's mount path on a
    cluster, a local folder for kfp.local); ``image`` the default of the
    ``image`` parameter (``ihl.edge.container_images.image("train")``).
    """
    defaults = {**DEFAULTS, "image": image or default_image("train")}
    if cluster is not None:
        defaults["num_gpus"] = cluster.num_gpus

    def ihl_pipeline(*values) -> Outputs:
        run = dict(zip(defaults, values, strict=True))
        prepared = prepare(
            dataset=run["dataset"],
            data_source=run["data_source"],
            data_path=run["data_path"],
            dvc_repo=run["dvc_repo"],
            dvc_rev=run["dvc_rev"],
            volume=volume,
            image=run["image"],
        )
        trained = train(
            prepared=prepared.outputs["prepared"],
            preset=run["preset"],
            epochs=run["epochs"],
            num_gpus=run["num_gpus"],
            overrides=run["overrides"],
            volume=volume,
            image=run["image"],
        )
        scored = evaluate(
            prepared=prepared.outputs["prepared"],
            model=trained.outputs["model"],
            image=run["image"],
        )
        found = detector(
            prepared=prepared.outputs["prepared"],
            preset=run["preset"],
            overrides=run["overrides"],
            image=run["image"],
        )
        exported = export(
            model=trained.outputs["model"],
            metrics=scored.outputs["metrics"],
            prepared=prepared.outputs["prepared"],
            detector=found.outputs["model"],
            detector_metrics=found.outputs["metrics"],
            name=run["model_name"],
            version=run["model_version"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            image=run["image"],
        )
        registered = register(
            package=exported.outputs["package"],
            registry_uri=run["registry_uri"],
            image=run["image"],
        )
        tasks = (prepared, trained, scored, found, exported, registered)
        for task in tasks:
            task.set_container_image(run["image"])
            task.set_caching_options(False)
        if cluster is not None:
            _apply_cluster(cluster, run["data_pvc"], *tasks)
        return Outputs(
            metrics=scored.outputs["metrics"],
            report=scored.outputs["report"],
            package=exported.outputs["package"],
            registered=registered.output,
        )

    ihl_pipeline.__signature__ = inspect.Signature(
        [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value,
                              annotation=type(value))
            for name, value in defaults.items()
        ],
        return_annotation=Outputs,
    )  # fmt: skip
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="IHL pose estimation: prepare, train on GPUs, evaluate, export, register.",
    )(ihl_pipeline)


def _apply_cluster(
    cluster: ClusterSettings, data_pvc, prepared, trained, scored, found, exported, registered
) -> None:
    """Kubernetes settings: GPUs, CPU/memory/shm per GPU, node placement, the data volume,
    staged weights, secrets, the image's non-root user. Every count and size is a literal,
    which every KFP backend honours. The detector trains on one GPU, as evaluation runs;
    loader workers follow the CPU request (IHL_CPUS)."""
    for task in (prepared, trained, scored, found, exported, registered):
        # The backend adds no privilege escalation, no capabilities and seccomp RuntimeDefault.
        kubernetes.set_security_context(
            task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True
        )
    for task in (prepared, trained, scored, found):
        kubernetes.mount_pvc(task, pvc_name=data_pvc, mount_path=VOLUME_MOUNT)
    _set_resources(prepared, cluster.prepare)
    for task, gpus in ((trained, cluster.num_gpus), (scored, 1), (found, 1)):
        sizes = cluster.resources(gpus)
        if gpus:
            task.set_accelerator_type(cluster.accelerator).set_accelerator_limit(gpus)
        _set_resources(task, sizes)
        task.set_env_variable(WEIGHTS_ENV, cluster.weights_dir)
        task.set_env_variable(CPUS_ENV, sizes.cpus)
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=sizes.shm_size,
        )
        for key, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        for tol in cluster.tolerations:
            kubernetes.add_toleration(
                task,
                key=tol.key,
                operator="Exists" if tol.value is None else "Equal",
                value=tol.value,
                effect=tol.effect,
            )
    if cluster.train_retries:
        trained.set_retry(cluster.train_retries, backoff_duration="60s", backoff_factor=2.0)
    if cluster.s3_secret:
        for task in (prepared, registered):
            kubernetes.use_secret_as_env(
                task, cluster.s3_secret, {key: key for key in S3_KEYS}, optional=True
            )
    if cluster.git_secret:
        kubernetes.use_secret_as_env(prepared, cluster.git_secret, GIT_KEYS, optional=True)


def _set_resources(task, sizes: Resources) -> None:
    task.set_cpu_request(sizes.cpu_request).set_cpu_limit(sizes.cpu_limit)
    task.set_memory_request(sizes.memory_request).set_memory_limit(sizes.memory_limit)


def check_arguments(arguments: dict, compiled_gpus: int | None = None) -> dict:
    """The full run parameters (defaults filled in), refusing, by name, a value the pipeline
    would only fail on minutes later. ``compiled_gpus``: the GPU count a compiled cluster
    pipeline requests (``compiled_gpus(path)``); its only valid ``num_gpus``."""
    unknown = set(arguments) - set(DEFAULTS) - {"image"}
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s): {', '.join(sorted(unknown))}")
    args = {**DEFAULTS, **arguments}
    if compiled_gpus is not None:
        if "num_gpus" not in arguments:
            args["num_gpus"] = compiled_gpus
        elif int(arguments["num_gpus"]) != compiled_gpus:
            raise ValueError(
                f"num_gpus={arguments['num_gpus']} but the pipeline was compiled to request "
                f"{compiled_gpus} GPU(s) for training (a literal count, so that every KFP "
                f"backend honours it); compile it with --gpus {arguments['num_gpus']}"
            )
    if args["dataset"] not in DATASETS:
        raise ValueError(
            f"unknown dataset {args['dataset']!r}; expected one of {', '.join(DATASETS)}"
        )
    if args["data_source"] not in DATA_SOURCES:
        raise ValueError(
            f"unknown data source {args['data_source']!r}; "
            f"expected one of {', '.join(DATA_SOURCES)}"
        )
    if args["data_source"] == "dvc" and not args["dvc_repo"]:
        raise ValueError("the dvc data source needs a git repository (dvc_repo)")
    if has_credentials(args["dvc_repo"]):
        raise ValueError(
            f"dvc_repo {redact_url(args['dvc_repo'])} holds credentials, which a run would "
            "store and show in clear: put the token in the Kubernetes secret ihl-git (keys "
            "username and token) and give the URL without it"
        )
    for name in ("epochs", "num_gpus"):
        if int(args[name]) < 0:
            raise ValueError(f"{name} must be 0 or more, got {args[name]}")
    epochs = {"train.epochs": int(args["epochs"])} if int(args["epochs"]) > 0 else {}
    try:  # what the train task will resolve, with a stand-in for the volume's folder
        config.resolve(
            args["preset"], {**args["overrides"], **epochs}, dataset=args["dataset"], data_root="."
        )
    except config.ConfigError as err:
        raise ValueError(str(err)) from None
    return args


def compiled_gpus(path: Path) -> int:
    """The train task's GPU count in a compiled cluster pipeline (its num_gpus default)."""
    import yaml

    spec = next(yaml.safe_load_all(Path(path).read_text()))
    try:
        return int(spec["root"]["inputDefinitions"]["parameters"]["num_gpus"]["defaultValue"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not an ihl pipeline (no num_gpus default)") from None


def compile_pipeline(
    path: Path, cluster: ClusterSettings | None = None, image: str | None = None
) -> Path:
    """Write the cluster pipeline (``ClusterSettings()`` unless given) as KFP YAML to ``path``,
    atomically (a temporary file renamed into place)."""
    pipeline = build_pipeline(cluster or ClusterSettings(), image=image)
    with tempfile.TemporaryDirectory() as scratch:
        compiled = Path(scratch) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(compiled))
        return write_bytes(path, compiled.read_bytes())
