"""TorchServe's entry point for the IHL pose model: images (and optional person boxes) in,
COCO keypoints out.

The work is ``ihl.edge.serving``'s, importable and tested without TorchServe: request
forms, limits and batch admission, the detector and the pose model. This file only builds
the service from the unpacked archive on TorchServe's first call. The HTTP contract is
docs/rest-api.md.
"""

from __future__ import annotations

from pathlib import Path

from ihl.edge.serving.service import PoseService


class PoseHandler:
    """The service an archive describes, built when TorchServe first calls."""

    service: PoseService | None = None

    def initialize(self, context) -> None:
        properties = context.system_properties
        self.service = PoseService.from_archive(
            Path(properties["model_dir"]),
            context.manifest,
            context.model_yaml_config or {},
            properties.get("gpu_id"),
        )

    def handle(self, data, context):
        return self.service.handle(data, context)


_handler = PoseHandler()


def handle(data, context):
    """TorchServe's entry point: the first call, with no data, loads the model."""
    if _handler.service is None:
        _handler.initialize(context)
    return None if data is None else _handler.handle(data, context)
