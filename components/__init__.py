"""Kubeflow (KFP v2) components: thin wrappers that run the ihl stages in the project image."""

from components.detector import detector
from components.evaluate import evaluate
from components.export import export
from components.prepare import prepare
from components.register import register
from components.train import train

__all__ = ["detector", "evaluate", "export", "prepare", "register", "train"]
