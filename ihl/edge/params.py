"""params.yaml, the DVC pipeline's tunable values, turned into a validated config.

The file names a ``preset`` and a ``dataset``; its ``model``, ``loss``, ``train``,
``data`` and ``detector`` sections hold the user's changes to that preset, and
nothing else: a key left null keeps the preset's value, so choosing another
preset gives exactly that preset. The keys are there (null) so that
``dvc exp run -S train.epochs=3`` can set them; dvc.yaml declares the sections as
the stages' params, so DVC re-runs a stage exactly when one of them changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ihl import config as config_mod

TRAIN_SECTIONS = ("model", "loss", "train", "data")
"""The sections the train stage reads (its params in dvc.yaml)."""
DETECTOR_SECTIONS = ("detector",)
"""The section the detector stage reads, so a change to training leaves the detector alone."""


def data_root(dataset: str) -> str:
    """Where the pipeline keeps a dataset: ``data/<name>``, as dvc.yaml spells it."""
    return f"data/{dataset}"


def read_params(path: str | Path) -> dict[str, Any]:
    """The params file as a mapping; a ConfigError names the file when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise config_mod.ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        raise config_mod.ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise config_mod.ConfigError(f"{path}: the top level must be a mapping")
    return data


def config_overrides(
    params: dict[str, Any], source: str | Path, sections: tuple[str, ...]
) -> dict[str, Any]:
    """The dotted-key config changes a params mapping makes: every non-null key of its
    ``sections``."""
    overrides: dict[str, Any] = {}
    for section in sections:
        node = params.get(section) or {}
        if not isinstance(node, dict):
            raise config_mod.ConfigError(f"{source}: {section} must be a mapping of config keys")
        flat = config_mod.flatten(node, f"{section}.")
        overrides |= {key: value for key, value in flat.items() if value is not None}
    return overrides


def params_config(
    path: str | Path,
    sections: tuple[str, ...],
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> config_mod.Config:
    """The config a params file describes for a stage that reads ``sections``: its
    ``preset`` (unless ``preset`` is given), its dataset in ``data/<dataset>``, the changes
    its ``sections`` make, then ``overrides``."""
    params = read_params(path)
    dataset = str(params.get("dataset", "synth"))
    changes = config_overrides(params, path, sections) | (overrides or {})
    try:
        return config_mod.resolve(
            preset or str(params.get("preset", "sample")),
            changes,
            dataset=dataset,
            data_root=data_root(dataset),
        )
    except config_mod.ConfigError as err:
        raise config_mod.ConfigError(f"{path}: {err}") from None
