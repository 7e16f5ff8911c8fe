"""The command line of the reference-fidelity work: config show, CrowdPose data, test-dev."""

from __future__ import annotations

import json

import torch
import yaml
from sample_data import COCO_ANN, COCO_DETS, COCO_IMAGES, COCO_SAMPLE

from ihl import config
from ihl.checkpoint import save_model
from ihl.models import build_model


def test_config_show_prints_the_resolved_config_and_its_starting_lr(cli):
    for world_size in ("1", "2"):
        result = cli("config", "show", "coco_hrnet_w32", "--world-size", world_size)
        assert result.exit_code == 0, result.output
        shown = yaml.safe_load(result.stdout)
        assert shown["effective_lr"] == 0.0005 and shown["train"]["batch_size"] == 64
    mpii = yaml.safe_load(cli("config", "show", "mpii_hrnet_w32").stdout)["data"]
    assert (mpii["half_body_prob"], mpii["shift_prob"]) == (0.0, 0.0)
    scaled = cli(
        "config", "show", "coco_hrnet_w32", "--world-size", "2", "--set", "train.scale_lr=true"
    )
    assert yaml.safe_load(scaled.stdout)["effective_lr"] == 0.000125
    bad = cli("config", "show", "coco_hrnet_w32", "--set", "train.lrr=1")
    assert bad.exit_code == 2 and "train.lrr: unknown key" in bad.output


def test_synth_crowdpose_writes_a_dataset_that_checks_clean(cli, tmp_path):
    root = tmp_path / "crowdpose"
    made = cli(
        "synth", root, "--dataset", "crowdpose", "--train", 3, "--val", 2, "--size", "160x120"
    )
    assert made.exit_code == 0, made.output
    test = json.loads((root / "annotations/mmpose_crowdpose_test.json").read_text())
    assert all("crowdIndex" in image for image in test["images"])
    assert all("area" not in a and len(a["keypoints"]) == 42 for a in test["annotations"])
    assert (root / "annotations/det_for_crowd_test_0.1_0.5.json").is_file()
    checked = cli("data", "check", root, "--dataset", "crowdpose")
    assert checked.exit_code == 0, checked.output


def test_evaluate_on_an_image_info_file_writes_a_submission(cli, tmp_path):
    data = json.loads(COCO_ANN.read_text())
    info = tmp_path / "image_info.json"
    info.write_text(json.dumps({k: v for k, v in data.items() if k != "annotations"}))
    torch.manual_seed(0)
    cfg = config.load("sample", {"model.input_size": [64, 64], "train.num_workers": 0})
    ckpt = save_model(tmp_path / "model.pt", build_model(cfg.model), cfg)
    out = tmp_path / "eval"
    args = ("--out", out, "--data-root", COCO_SAMPLE, "--ann", info, "--images", COCO_IMAGES)
    result = cli("evaluate", ckpt, *args, "--boxes", COCO_DETS)
    assert result.exit_code == 0, result.output
    assert "no metrics" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_params_dataset_crowdpose_sets_the_config_and_the_pipeline_accepts_it(tmp_path):
    from ihl.edge.params import TRAIN_SECTIONS, params_config
    from ihl.prepare import DATASETS

    params = tmp_path / "params.yaml"
    params.write_text("dataset: crowdpose\npreset: crowdpose_hrnet_w32\n")
    cfg = params_config(params, TRAIN_SECTIONS)
    assert cfg.data.dataset == "crowdpose" and cfg.model.num_joints == 14
    assert cfg.data.root == "data/crowdpose"
    assert "crowdpose" in DATASETS


def test_import_checkpoint_takes_an_mmengine_file(cli, tmp_path):
    from pathlib import Path

    from ihl.checkpoint import safe_load

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    out = tmp_path / "imported.pt"
    result = cli(
        "import-checkpoint",
        fixtures / "mmengine_ckpt.pth",
        out,
        "-c",
        fixtures / "mmengine_ckpt.yaml",
    )
    assert result.exit_code == 0, result.output
    assert {"model", "flow", "config"} <= set(safe_load(out))


def test_show_gt_draws_crowdpose_annotations(cli, tmp_path):
    root = tmp_path / "crowdpose"
    assert cli("synth", root, "--dataset", "crowdpose", "--train", 0, "--val", 2).exit_code == 0
    ann = root / "annotations/mmpose_crowdpose_test.json"
    result = cli(
        "show-gt", ann, root / "images", "-o", tmp_path / "drawn", "--dataset", "crowdpose"
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "drawn").iterdir())) == 2
