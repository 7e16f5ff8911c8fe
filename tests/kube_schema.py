"""Kubernetes objects read through the ``kubernetes`` client's models, the API's schema.

A manifest that comes back unchanged has no misspelt or unknown field (the models drop
them) and no value of the wrong type; a missing required field raises.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from kubernetes.client import ApiClient


def as_kubernetes_reads_it(data: dict, model: str) -> dict:
    """``data`` read as the client's ``model`` (e.g. "V1PodTemplateSpec") and written back."""
    client = ApiClient()
    read = client.deserialize(SimpleNamespace(data=json.dumps(data)), model)
    return client.sanitize_for_serialization(read)
