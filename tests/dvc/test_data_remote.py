"""`ihl data add`, and a dataset's round trip through an S3 remote (moto) with the real `dvc`.

The tests share one project whose COCO sample is added and pushed once; the last one
replaces that dataset.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import boto3
import pytest
from project_copy import dvc, git, make_project, tool_env
from sample_data import COCO_SAMPLE, MPII_SAMPLE, coco_layout
from servers import free_port
from typer.testing import CliRunner

from ihl.cli.main import app

pytestmark = pytest.mark.slow

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    """Credentials in the environment only, as a user would set them; no AWS files."""
    empty = tmp_path_factory.mktemp("aws")
    env = CREDENTIALS | {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(empty / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials"),
        "PATH": tool_env()["PATH"],
        "DVC_NO_ANALYTICS": "1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def ihl(*args, cwd: Path):
    """``ihl ARGS...`` in-process, run from ``cwd``."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(here)


def same_tree(a: Path, b: Path) -> bool:
    """Every file of ``a`` and ``b`` exists in both, byte for byte."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def no_debris(data: Path) -> bool:
    return not [p for p in data.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    """The COCO sample in COCO's layout (train2017, val2017), as `ihl data add` takes it."""
    return coco_layout(tmp_path_factory.mktemp("coco") / "coco")


@pytest.fixture(scope="module")
def stored(tmp_path_factory, s3_server, aws_env, coco) -> Path:
    """A project whose COCO sample was added with `ihl data add`, committed and pushed."""
    project = make_project(tmp_path_factory.mktemp("data") / "project", pipeline=False)
    result = ihl("data", "add", "coco", coco, cwd=project)
    assert result.exit_code == 0, result.output
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="datasets")
    dvc("remote", "add", "-d", "store", "s3://datasets/dvc", cwd=project)
    dvc("remote", "modify", "store", "endpointurl", s3_server, cwd=project)
    git("add", "data/coco.dvc", ".dvc/config", cwd=project)
    git("commit", "-qm", "coco sample", cwd=project)
    result = ihl("data", "push", cwd=project)
    assert result.exit_code == 0, result.output
    return project


def test_add_places_the_folder_and_tracks_it(stored, coco):
    assert same_tree(coco, stored / "data/coco")
    assert no_debris(stored / "data")
    assert "up to date" in dvc("status", "data/coco.dvc", cwd=stored).stdout
    assert git("status", "--porcelain", cwd=stored) == ""


def test_pull_on_another_clone_restores_identical_files(stored, coco, tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(stored), str(clone), cwd=tmp_path)
    assert not (clone / "data/coco").exists()
    result = ihl("data", "pull", "data/coco.dvc", cwd=clone)
    assert result.exit_code == 0, result.output
    assert same_tree(coco, clone / "data/coco")


def test_missing_remote_credentials_or_endpoint_say_what_to_do(stored, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    git("clone", "-q", str(stored), str(clone), cwd=tmp_path)
    for key in CREDENTIALS:
        monkeypatch.setenv(key, "")
    result = ihl("data", "pull", cwd=clone)
    assert result.exit_code == 2
    assert "no S3 credentials for remote 'store'" in result.output
    assert "dvc remote modify --local store access_key_id" in result.output

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    dead = f"http://127.0.0.1:{free_port()}"
    dvc("remote", "modify", "--local", "store", "endpointurl", dead, cwd=clone)
    result = ihl("data", "pull", cwd=clone)
    assert result.exit_code == 2
    assert f"cannot reach the S3 endpoint of remote 'store' (s3://datasets/dvc at {dead})" in (
        result.output
    )

    result = ihl("data", "push", "-r", "elsewhere", cwd=clone)
    assert result.exit_code == 2
    assert "no DVC remote named 'elsewhere' (configured: store)" in result.output
    dvc("remote", "default", "--unset", cwd=clone)
    result = ihl("data", "push", cwd=clone)
    assert result.exit_code == 2
    assert "no DVC remote is configured: add one with `dvc remote add -d" in result.output
    assert not (clone / "data/coco").exists() and not (clone / ".dvc/cache").exists()


def test_bad_adds_change_nothing(stored, coco, tmp_path):
    result = ihl("data", "add", "imagenet", COCO_SAMPLE, cwd=stored)
    assert result.exit_code == 2
    assert "unknown dataset 'imagenet': `ihl data add` takes coco or mpii" in result.output

    result = ihl("data", "add", "mpii", tmp_path / "nowhere", cwd=stored)
    assert result.exit_code == 2
    assert f"dataset folder not found: {tmp_path / 'nowhere'}" in result.output

    result = ihl("data", "add", "mpii", COCO_SAMPLE, cwd=stored)
    assert result.exit_code == 2
    assert "is not in the mpii layout (docs/data.md#layouts): missing annotations/mpii_train" in (
        result.output
    )

    result = ihl("data", "add", "mpii", MPII_SAMPLE, cwd=tmp_path)
    assert result.exit_code == 2 and "not inside a DVC project" in result.output

    result = ihl("data", "add", "coco", coco, cwd=stored)
    assert result.exit_code == 2 and "pass --replace" in result.output
    assert sorted(p.name for p in (stored / "data").iterdir()) == ["coco", "coco.dvc"]
    assert git("status", "--porcelain", cwd=stored) == ""
    assert same_tree(coco, stored / "data/coco")


def test_add_refuses_a_folder_outside_the_layout(stored, tmp_path):
    """The vendored sample is valid COCO data, but in one split called "sample": prepare
    would index that split alone, and training would find no train2017."""
    result = ihl("data", "add", "coco", COCO_SAMPLE, "--replace", cwd=stored)
    assert result.exit_code == 2
    assert (
        f"{COCO_SAMPLE} is not in the coco layout (docs/data.md#layouts): missing "
        "annotations/person_keypoints_train2017.json, annotations/person_keypoints_val2017.json, "
        "train2017, val2017"
    ) in result.output
    partial = coco_layout(tmp_path / "partial")
    (partial / "annotations/person_keypoints_val2017.json").unlink()
    result = ihl("data", "add", "coco", partial, "--replace", cwd=stored)
    assert result.exit_code == 2
    assert "missing annotations/person_keypoints_val2017.json" in result.output
    assert git("status", "--porcelain", cwd=stored) == ""


def test_replace_keeps_the_old_version_when_dvc_add_fails(stored, coco, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(coco, newer)
    (newer / "train2017/extra.txt").write_text("a new file in the new version")
    cache = stored / ".dvc/cache"
    cache.rename(tmp_path / "cache")
    cache.write_text("a file where DVC's cache folder should be")
    result = ihl("data", "add", "coco", newer, "--replace", "--move", cwd=stored)
    assert result.exit_code == 2
    assert same_tree(coco, stored / "data/coco")
    assert (newer / "train2017/extra.txt").is_file() and no_debris(stored / "data")

    cache.unlink()
    (tmp_path / "cache").rename(cache)
    result = ihl("data", "add", "coco", newer, "--replace", "--move", cwd=stored)
    assert result.exit_code == 0, result.output
    assert (stored / "data/coco/train2017/extra.txt").is_file() and not newer.exists()
    assert "up to date" in dvc("status", "data/coco.dvc", cwd=stored).stdout
    assert "data/coco.dvc" in git("status", "--porcelain", cwd=stored)
