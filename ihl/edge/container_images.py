"""The project's container image: one name, used by the Kubeflow components and KServe.

The Dockerfile builds two targets from one file: ``train`` runs the Kubeflow
components and the command line, ``serve`` runs TorchServe. Both are tagged
``REPOSITORY:TAG-TARGET``. A cluster points at its own registry with
``IHL_IMAGE_REPOSITORY`` and ``IHL_IMAGE_TAG`` (or passes a digest reference
through the pipeline's ``image`` parameter).
"""

from __future__ import annotations

import os
from importlib.metadata import version

REPOSITORY = "ghcr.io/ihl-pose/ihl"
TARGETS = ("train", "serve")
IMAGE_UID = 10001
"""The images' user and group (the Dockerfile's USER): what pods run as and own volumes with."""


def image(target: str = "train") -> str:
    """The image reference for ``target`` ("train" or "serve")."""
    if target not in TARGETS:
        raise ValueError(f"unknown image target {target!r}; expected one of {TARGETS}")
    repository = os.environ.get("IHL_IMAGE_REPOSITORY", REPOSITORY)
    tag = os.environ.get("IHL_IMAGE_TAG", version("ihl"))
    return f"{repository}:{tag}-{target}"
