"""What the preset-through-every-path tests share: every preset arrives intact on every
path, i.e. the config a run records is `ihl config show PRESET` with only the data folder
and the stated overrides changed.

The paths (tests/test_preset_paths.py, tests/dvc/test_preset_repro.py,
tests/kfp/test_preset_local.py): `ihl train`, the PyTorchJob's `ihl train` arguments,
`dvc repro` with params.yaml switched to the preset, and the Kubeflow prepare and train
components under kfp.local. The runs train one step of the real preset on real data (the
vendored COCO sample; a tiny synthetic set in the MPII or CrowdPose layout for those
presets); the stated overrides only make that step cheap and offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from sample_data import COCO_ANN, COCO_DETS, COCO_IMAGES

from ihl import config

PRESETS = config.preset_names()
STATED = {
    "train.epochs": 1,
    "train.batch_size": 2,
    "train.num_workers": 0,
    "train.compile": False,
    "model.pretrained": False,
}
"""One step, in this process's threads, no compiler, no ImageNet download."""
COCO_TRAIN_IMAGE, COCO_VAL_IMAGE = 40083, 785
"""Sample images with two persons to train on (one batch of two) and one to validate on."""


def shown(cli, preset: str) -> dict:
    """`ihl config show PRESET` as the user reads it, without effective_lr."""
    result = cli("config", "show", preset)
    assert result.exit_code == 0, result.output
    values = yaml.safe_load(result.output)
    del values["effective_lr"]
    return values


def expected(cli, preset: str, root: str | Path) -> dict:
    return config.flatten(shown(cli, preset)) | STATED | {"data.root": str(root)}


def _coco_split(root: Path, folder: str, image_id: int, detections: bool) -> None:
    ann = json.loads(COCO_ANN.read_text())
    images = [i for i in ann["images"] if i["id"] == image_id]
    split = {
        **ann,
        "images": images,
        "annotations": [a for a in ann["annotations"] if a["image_id"] == image_id],
    }
    (root / "annotations" / f"person_keypoints_{folder}.json").write_text(json.dumps(split))
    (root / folder).mkdir()
    for image in images:
        shutil.copy2(COCO_IMAGES / image["file_name"], root / folder / image["file_name"])
    if detections:
        found = [d for d in json.loads(COCO_DETS.read_text()) if d["image_id"] == image_id]
        boxes = sorted(found, key=lambda d: d["score"])[-1:]
        (root / "person_detection_results").mkdir()
        dets = root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
        dets.write_text(json.dumps(boxes))


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A dataset folder per layout: two COCO sample images in the COCO 2017 layout, tiny
    synthetic MPII and CrowdPose sets."""
    from ihl.data.synth import make_crowdpose_synth, make_mpii_synth

    base = tmp_path_factory.mktemp("preset-data")
    coco = base / "coco"
    (coco / "annotations").mkdir(parents=True)
    _coco_split(coco, "train2017", COCO_TRAIN_IMAGE, detections=False)
    _coco_split(coco, "val2017", COCO_VAL_IMAGE, detections=True)
    make_mpii_synth(base / "mpii", 3, 1, image_size=(160, 120), max_people=2)
    make_crowdpose_synth(base / "crowdpose", 3, 1, image_size=(160, 120), max_people=2)
    return {"coco": coco, "mpii": base / "mpii", "crowdpose": base / "crowdpose"}


def recorded(path: Path) -> dict:
    """A recorded params.yaml, flattened, read as DVC reads it (YAML 1.2: `off` is a string)."""
    from ruamel.yaml import YAML

    return config.flatten(YAML(typ="safe", pure=True).load(path.read_text()))


def as_sets(overrides: dict) -> list[str]:
    return [x for key, value in overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]
