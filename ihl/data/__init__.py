"""Datasets, keypoint metadata and transforms."""
