"""Every preset arrives intact on every path: the config a run records is `ihl config show
PRESET` with only the data folder and the stated overrides changed.

The paths: `ihl train`, `dvc repro` with params.yaml switched to the preset, the Kubeflow
prepare and train components under kfp.local, and the PyTorchJob's `ihl train` arguments.
The runs train one step of the real preset on real data (the vendored COCO sample; a tiny
synthetic set in the MPII or CrowdPose layout for those presets); the stated overrides only
make that step cheap and offline.
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


def _sets(overrides: dict) -> list[str]:
    return [x for key, value in overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]


@pytest.mark.parametrize("preset", PRESETS)
def test_pytorchjob_arguments_give_the_preset(cli, preset):
    dataset = config.load(preset).data.dataset
    result = cli(
        "pipeline", "pytorchjob", "--name", "job", "--data-path", dataset, "--nodes", "1",
        "--gpus-per-node", "1", "--preset", preset, *_sets(STATED),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(result.output)
    spec = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    train_args = command[command.index("train") + 1 :]
    chosen = train_args[train_args.index("-c") + 1]
    sets = [train_args[i + 1] for i, arg in enumerate(train_args) if arg == "--set"]
    given = cli("config", "show", chosen, *(x for item in sets for x in ("--set", item)))
    assert given.exit_code == 0, given.output
    shown_args = config.flatten(yaml.safe_load(given.output))
    del shown_args["effective_lr"]
    assert shown_args == expected(cli, preset, f"/data/{dataset}")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_ihl_train_records_the_preset(cli, datasets, tmp_path, preset):
    root = datasets[config.load(preset).data.dataset]
    result = cli(
        "train", "-c", preset, "-o", tmp_path / "run", *_sets(STATED), "--set",
        f"data.root={root}", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recorded(tmp_path / "run" / "live" / "params.yaml") == expected(cli, preset, root)


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, datasets):
    """A project copy with every dataset folder in place (data/coco, data/mpii, ...)."""
    from project_copy import make_project

    project = make_project(tmp_path_factory.mktemp("dvc") / "project")
    for name, folder in datasets.items():
        shutil.copytree(folder, project / "data" / name)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_dvc_repro_records_the_preset(cli, dvc_project, preset):
    from project_copy import dvc

    dataset = config.load(preset).data.dataset
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params |= {"preset": preset, "dataset": dataset}
    for key, value in STATED.items():
        section, name = key.split(".")
        params[section] = {**params[section], name: value}
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "train", cwd=dvc_project)
    written = recorded(dvc_project / "model" / "live" / "params.yaml")
    assert written == expected(cli, preset, f"data/{dataset}")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_kfp_local_train_records_the_preset(cli, datasets, tmp_path, preset):
    from kfp import dsl, local

    from components import prepare, train

    dataset = config.load(preset).data.dataset
    volume = tmp_path / "volume"
    volume.mkdir()

    @dsl.pipeline(name="preset-path")
    def prepare_and_train(data_path: str) -> dsl.Model:
        prepared = prepare(
            dataset=dataset, data_source="volume", data_path=data_path, dvc_repo="",
            dvc_rev="", volume=str(volume), image="local",
        )  # fmt: skip
        trained = train(
            prepared=prepared.outputs["prepared"], preset=preset, epochs=0, num_gpus=0,
            overrides=STATED, volume=str(volume), image="local",
        )  # fmt: skip
        return trained.outputs["model"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "tasks"))
    model = prepare_and_train(data_path=str(datasets[dataset])).output
    recorded = yaml.safe_load(
        (Path(model.metadata["run_dir"]) / "live" / "params.yaml").read_text()
    )
    root = str(datasets[dataset].resolve())
    assert config.flatten(recorded) == expected(cli, preset, root)
