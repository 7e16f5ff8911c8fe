"""`ihl synth`, `ihl data check` and `ihl show-gt` on synthetic and real sample data."""

from __future__ import annotations

import json
import re
import shutil

import cv2
from sample_data import COCO_SAMPLE


def test_synth_writes_a_dataset_and_prints_its_summary(cli, tmp_path):
    result = cli("synth", tmp_path / "s", "--train", 2, "--val", 1, "--size", "96x64")
    assert result.exit_code == 0, result.output
    assert re.search(r"^train_images +2$", result.output, re.MULTILINE)
    image = cv2.imread(str(next((tmp_path / "s/train2017").glob("*.jpg"))))
    assert image.shape == (64, 96, 3)

    again = cli("synth", tmp_path / "s", "--train", 1, "--val", 1)
    assert again.exit_code == 2
    assert "--overwrite" in again.output
    assert cli("synth", tmp_path / "s", "--train", 1, "--val", 1, "--overwrite").exit_code == 0


def test_synth_rejects_a_bad_size(cli, tmp_path):
    result = cli("synth", tmp_path / "s", "--size", "96by64")
    assert result.exit_code == 2
    assert "--size '96by64'" in result.output
    assert not (tmp_path / "s").exists()


def test_data_check_passes_a_good_folder(cli, coco_synth, tmp_path):
    result = cli("data", "check", coco_synth)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no problems in coco dataset")

    mpii = tmp_path / "mpii"
    assert cli("synth", mpii, "--dataset", "mpii", "--train", 1, "--val", 2).exit_code == 0
    result = cli("data", "check", mpii, "--dataset", "mpii")
    assert result.exit_code == 0, result.output


def test_data_check_names_every_broken_file(cli, coco_synth, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(coco_synth, broken)
    missing = sorted((broken / "train2017").glob("*.jpg"))[0]
    missing.unlink()
    truncated = sorted((broken / "val2017").glob("*.jpg"))[0]
    truncated.write_bytes(truncated.read_bytes()[:2000])

    result = cli("data", "check", broken)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith(str(missing)) for line in lines)
    assert any(line.startswith(str(truncated)) and "truncated JPEG" in line for line in lines)
    assert "2 problem(s)" in result.output

    fast = cli("data", "check", broken, "--no-decode")
    assert fast.exit_code == 1
    assert f"{missing}: image file not found" in fast.output
    assert truncated.name not in fast.output


def test_data_check_of_a_missing_folder_is_a_usage_error(cli, tmp_path):
    result = cli("data", "check", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "nowhere" in result.output


def test_show_gt_draws_coco_ground_truth(cli, tmp_path):
    ann = COCO_SAMPLE / "annotations/person_keypoints_sample.json"
    result = cli("show-gt", ann, COCO_SAMPLE / "images", "--out", tmp_path / "gt", "--limit", 2)
    assert result.exit_code == 0, result.output
    drawn = sorted((tmp_path / "gt").glob("*.jpg"))
    assert len(drawn) == 2
    first = json.loads(ann.read_text())["images"][0]
    original = cv2.imread(str(COCO_SAMPLE / "images" / first["file_name"]))
    image = cv2.imread(str(tmp_path / "gt" / first["file_name"]))
    assert image.shape == original.shape
    assert (cv2.absdiff(image, original).max(axis=2) > 60).sum() > 500


def test_show_gt_draws_mpii_ground_truth(cli, tmp_path):
    mpii = tmp_path / "mpii"
    assert cli("synth", mpii, "--dataset", "mpii", "--train", 0, "--val", 2).exit_code == 0
    result = cli(
        "show-gt",
        mpii / "annotations/mpii_val.json",
        mpii / "images",
        "--out",
        tmp_path / "gt",
        "--dataset",
        "mpii",
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "gt").glob("*.jpg"))) == 2


def test_show_gt_names_a_missing_annotation_file(cli, tmp_path):
    result = cli("show-gt", tmp_path / "none.json", tmp_path, "--out", tmp_path / "gt")
    assert result.exit_code == 2
    assert "none.json" in result.output
