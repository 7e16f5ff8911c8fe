"""Pose models: backbones, the IHL head and the two baseline heads."""

from ihl.models.pose import PoseModel, build_model

__all__ = ["PoseModel", "build_model"]
