"""Shared fixtures for the command-line tests: synthetic and real sample data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def coco_synth(tmp_path_factory) -> Path:
    from ihl.data.synth import make_coco_synth

    root = tmp_path_factory.mktemp("synth") / "coco"
    make_coco_synth(root, 2, 2, image_size=(160, 120))
    return root
