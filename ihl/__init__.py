"""Implicit Heatmap Learning for human pose estimation."""
