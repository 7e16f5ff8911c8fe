"""The pipeline's run parameters, defined once: its signature, ``check_arguments``'s defaults
and the ``ihl pipeline submit`` and ``run-local`` options are all made from ``PARAMETERS``.

Adding a parameter is one entry here (and its use in ``training.build_pipeline``). Light
on purpose (no kfp), so that the command line can build its options without loading kfp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    help: str
    option: str | None = None
    """The command-line option (``--gpus`` for num_gpus); default: the name with dashes."""

    @property
    def type(self) -> type:
        """str, int or dict: the KFP parameter type, from the default's."""
        return type(self.default)

    @property
    def flag(self) -> str:
        return "--" + (self.option or self.name.replace("_", "-"))


PARAMETERS = (
    Parameter("dataset", "synth", "synth, coco, mpii or crowdpose."),
    Parameter("preset", "sample", "Config preset (`ihl presets`)."),
    Parameter("epochs", 0, "Training epochs; 0 keeps the preset's."),
    Parameter(
        "num_gpus",
        1,
        "GPUs of the train task (0: CPU; more than 1: torchrun in the task). A cluster "
        "pipeline requests the count it was compiled for and takes no other.",
        option="gpus",
    ),
    Parameter(
        "data_source",
        "volume",
        "volume (DATA_PATH on the data volume) or dvc (DATA_PATH in the git repository "
        "DVC_REPO at DVC_REV).",
    ),
    Parameter(
        "data_path", "synth", "Dataset folder: on the data volume, or inside the DVC repository."
    ),
    Parameter("dvc_repo", "", "Git URL of the DVC repository (dvc source)."),
    Parameter("dvc_rev", "", "Git revision of the DVC repository."),
    Parameter("data_pvc", "ihl-data", "PVC holding the data volume."),
    Parameter(
        "overrides",
        {},
        "Config changes over the preset, dotted keys (`--set train.batch_size=32`, repeatable).",
        option="set",
    ),
    Parameter(
        "registry_uri", "", "Model registry s3://bucket/prefix; empty: the model is not registered."
    ),
    Parameter("model_name", "ihl", "Registered model name."),
    Parameter("model_version", "", "Model version; empty: the pipeline run's id."),
)
"""Every run parameter but ``image``, whose default is set when the pipeline is built."""

DEFAULTS = {p.name: p.default for p in PARAMETERS}
