"""Kubeflow pipelines for ihl: the training pipeline, its cluster settings and the
multi-node PyTorchJob manifest."""
