"""Components called as plain functions (``component.python_func``) with real artifacts:
prepare fetching from a real DVC remote, train under torchrun."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kfp.dsl import Dataset, Model

from components import prepare, train
from ihl.data.synth import make_coco_synth

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git repository whose data/synth is tracked by DVC and pushed to a folder remote; the
    local DVC cache is then emptied, so the data can only come from the remote."""
    from dvc.repo import Repo

    base = tmp_path_factory.mktemp("dvc")
    repo_dir, remote = base / "repo", base / "remote"
    repo_dir.mkdir()
    subprocess.run([*GIT, "init", "-q", str(repo_dir)], check=True)
    repo = Repo.init(str(repo_dir))
    with repo.config.edit() as conf:
        conf["remote"]["store"] = {"url": str(remote)}
        conf["core"]["remote"] = "store"
    make_coco_synth(repo_dir / "data" / "synth", 3, 2, image_size=(96, 72))
    repo.add(str(repo_dir / "data" / "synth"))
    repo.push()
    repo.close()
    subprocess.run([*GIT, "-C", str(repo_dir), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo_dir), "commit", "-qm", "data"], check=True)
    shutil.rmtree(repo_dir / ".dvc" / "cache")
    commit = subprocess.run(
        ["git", "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return repo_dir, remote, commit


def test_prepare_fetches_a_dvc_revision_once(dvc_repo, tmp_path):
    repo_dir, remote, commit = dvc_repo
    volume = tmp_path / "volume"
    first = Dataset(name="prepared", uri=str(tmp_path / "a" / "prepared"), metadata={})
    prepare.python_func(
        dataset="synth", data_source="dvc", data_path="data/synth", dvc_repo=str(repo_dir),
        dvc_rev="", volume=str(volume), image="img", prepared=first,
    )  # fmt: skip
    root = volume / "dvc" / commit / "data" / "synth"
    assert first.metadata["commit"] == commit
    assert first.metadata["root"] == str(root.resolve())
    assert len(list((root / "train2017").glob("*.jpg"))) == 3
    assert first.metadata["splits"]["train2017"]["images"] == 3
    assert (tmp_path / "a" / "prepared" / "index.json").is_file()

    # The same commit, named by its hash: served from the volume, the remote is not needed.
    shutil.move(remote, remote.with_name("remote-away"))
    try:
        second = Dataset(name="prepared", uri=str(tmp_path / "b" / "prepared"), metadata={})
        prepare.python_func(
            dataset="synth", data_source="dvc", data_path="data/synth", dvc_repo=str(repo_dir),
            dvc_rev=commit, volume=str(volume), image="img", prepared=second,
        )  # fmt: skip
    finally:
        shutil.move(remote.with_name("remote-away"), remote)
    assert second.metadata["fingerprint"] == first.metadata["fingerprint"]


def test_prepare_leaves_another_runs_download_alone(dvc_repo, tmp_path):
    """Two runs fetching one commit used one fixed `.partial` folder, and each deleted it."""
    repo_dir, _, commit = dvc_repo
    volume = tmp_path / "volume"
    other = volume / "dvc" / commit / "data" / "synth.partial"
    other.mkdir(parents=True)
    (other / "half-downloaded.jpg").write_bytes(b"another run is writing this")
    prepared = Dataset(name="prepared", uri=str(tmp_path / "prepared"), metadata={})
    prepare.python_func(
        dataset="synth", data_source="dvc", data_path="data/synth", dvc_repo=str(repo_dir),
        dvc_rev="", volume=str(volume), image="img", prepared=prepared,
    )  # fmt: skip
    assert (other / "half-downloaded.jpg").is_file()
    root = volume / "dvc" / commit / "data"
    assert sorted(p.name for p in root.iterdir()) == ["synth", "synth.partial"]


@pytest.mark.slow
def test_train_under_torchrun(tmp_path, monkeypatch, capfd):
    """num_gpus 2 starts torchrun with two `ihl train` processes; here they run on the CPU
    (gloo), the GPU count check being told there are two devices."""
    data = tmp_path / "volume" / "synth"
    make_coco_synth(data, 8, 2, image_size=(96, 72))
    prepared = Dataset(name="prepared", uri=str(tmp_path / "prepared"), metadata={})
    prepared.metadata.update({"dataset": "synth", "root": str(data), "fingerprint": "f"})
    overrides = {
        "model.input_size": [64, 64], "model.deconv_channels": 16, "train.batch_size": 2,
        "train.warmup_iters": 1, "train.lr_steps": [1], "loss.wasserstein": "none",
    }  # fmt: skip
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    # the component finds `ihl` on PATH, as in the image; also when pytest ran without `uv run`
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    model = Model(name="model", uri=str(tmp_path / "model"), metadata={})
    train.python_func(
        prepared=prepared, preset="sample", epochs=1, num_gpus=2, overrides=overrides,
        volume=str(tmp_path / "volume"), image="img", model=model,
    )  # fmt: skip
    run_dir = tmp_path / "volume" / "runs" / model.metadata["run_dir"].rsplit("/", 1)[1]
    assert (
        torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["state"]["epoch"] == 1
    )
    assert (run_dir / "config.yaml").is_file()
    best = torch.load(tmp_path / "model", weights_only=False)
    assert list(best["config"]["model"]["input_size"]) == [64, 64]
    # two processes share the epoch: half the steps a single process would take
    from ihl import config
    from ihl.data.build import build_train_dataset

    crops = len(build_train_dataset(config.load("sample", overrides | {"data.root": str(data)})))
    steps = math.ceil(crops / 2) // 2
    assert f"{steps}/{steps} [" in capfd.readouterr().err


def test_train_refuses_more_gpus_than_the_pod_has(tmp_path):
    prepared = Dataset(name="prepared", uri=str(tmp_path / "p"), metadata={})
    prepared.metadata.update({"dataset": "synth", "root": str(tmp_path), "fingerprint": "f"})
    model = Model(name="model", uri=str(tmp_path / "m"), metadata={})
    wanted = torch.cuda.device_count() + 1
    with pytest.raises(RuntimeError, match=f"num_gpus={wanted} but this pod sees"):
        train.python_func(
            prepared=prepared, preset="sample", epochs=1, num_gpus=wanted, overrides={},
            volume=str(tmp_path), image="img", model=model,
        )  # fmt: skip
