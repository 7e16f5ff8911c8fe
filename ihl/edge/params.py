"""params.yaml, the DVC pipeline's tunable values, turned into a validated config.

The file's ``model``, ``loss``, ``train`` and ``data`` sections are layered over
its ``preset`` (so ``dvc exp run -S train.epochs=3`` changes exactly that key),
and its ``dataset`` decides where the data lives and how many joints the model
predicts. dvc.yaml declares the same keys as the train stage's params, so DVC
re-runs training exactly when one of them changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ihl import config as config_mod
from ihl.data.errors import DatasetError
from ihl.data.keypoints import get_spec
from ihl.prepare import layout

CONFIG_SECTIONS = ("model", "loss", "train", "data")
"""Sections of params.yaml that are config overrides (the train stage's params)."""

DERIVED_KEYS = ("data.root", "data.dataset", "model.num_joints")
"""Config keys that follow from ``dataset`` and so may not be set in params.yaml."""


def data_root(dataset: str) -> str:
    """Where the pipeline keeps a dataset: ``data/<name>``, as dvc.yaml spells it."""
    layout(dataset)
    return f"data/{dataset}"


def _flatten(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


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


def config_overrides(path: str | Path) -> dict[str, Any]:
    """Dotted-key config overrides from a params file: its config sections and its dataset."""
    params = read_params(path)
    try:
        dataset = str(params.get("dataset", "synth"))
        kind = layout(dataset)
    except DatasetError as err:
        raise config_mod.ConfigError(f"{path}: dataset: {err}") from None
    overrides: dict[str, Any] = {}
    for section in CONFIG_SECTIONS:
        node = params.get(section) or {}
        if not isinstance(node, dict):
            raise config_mod.ConfigError(f"{path}: {section} must be a mapping of config keys")
        overrides.update(_flatten(node, section))
    for key in DERIVED_KEYS:
        if key in overrides:
            raise config_mod.ConfigError(
                f"{path}: {key} follows from `dataset: {dataset}`; remove it and set dataset"
            )
    return overrides | {
        "data.root": data_root(dataset),
        "data.dataset": kind,
        "model.num_joints": get_spec(kind).num_joints,
    }
