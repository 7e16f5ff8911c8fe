"""Export: the TorchServe archive, KServe config and model card, in the registry's layout."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import ihl_component


@ihl_component
def export(
    model: Input[Model],
    metrics: Input[Metrics],
    prepared: Input[Dataset],
    detector: Input[Model],
    detector_metrics: Input[Metrics],
    name: str,
    version: str,
    run_id: str,
    image: str,
    package: Output[Model],
):
    """Write ``package``/model-store/``name``.mar, config/config.properties and model_card.md;
    the archive packs the ``detector`` (serving downloads nothing).

    ``version`` "" names the version after the pipeline run (``run_id``). The data
    version in the model card is the DVC commit when the data came from DVC, else
    the prepared dataset's version (its name and content fingerprint).
    """
    from pathlib import Path

    from ihl.edge.export import export_model
    from ihl.edge.urls import redact_url

    version = version or run_id
    data = prepared.metadata
    data_version = (
        f"{redact_url(data['dvc_repo'])}@{data['commit']}:{data['root']}"
        if data.get("data_source") == "dvc"
        else data["version"]
    )
    archive = export_model(
        Path(model.path),
        Path(package.path),
        metrics=Path(metrics.path),
        name=name,
        version=version,
        data_version=data_version,
        detector=Path(detector.path),
        detector_metrics=Path(detector_metrics.path),
    )
    package.metadata.update(
        {"name": name, "version": version, "archive": str(archive.relative_to(package.path))}
    )
