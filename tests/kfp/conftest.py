"""Helpers for the Kubeflow pipeline tests: reading a compiled pipeline back."""

from __future__ import annotations

import yaml


def load_pipeline(path) -> tuple[dict, dict]:
    """A compiled pipeline file: (the pipeline spec, its Kubernetes platform spec)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
