"""Throw-away copies of the project for the real `dvc` command line.

A copy holds the project's dvc.yaml, params.yaml (with tiny sizes), ignore files and
the code the stages declare as dependencies, in a fresh Git + DVC repository. The
stages run the installed `ihl` command of this environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")
PROJECT_DIRS = ("ihl", "serving")

TINY = {
    "synth": {"train": 8, "val": 4, "size": "160x120"},
    "model": {"input_size": [32, 32], "deconv_channels": 16},
    "train": {"epochs": 1, "batch_size": 8, "lr_steps": []},
    "detector": {"epochs": 1, "min_size": 96},
}
"""Changes to params.yaml that make the whole pipeline run in seconds."""


def tool_env(**extra: str) -> dict[str, str]:
    """This environment's executables first on PATH (the stages call `ihl`), no analytics."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"PATH": path, "DVC_NO_ANALYTICS": "1"} | extra


def dvc(*args: str, cwd: Path, env: dict[str, str] | None = None, ok: bool = True):
    """Run the real `dvc` command line; with ``ok`` fail the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env or tool_env(),
        capture_output=True,
        text=True,
    )
    if ok and done.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            _merge(base[key], value)
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
        )
    return merged


def make_project(path: Path, params: dict | None = None, *, pipeline: bool = True) -> Path:
    """A committed Git + DVC repository at ``path``; with ``pipeline`` it holds the
    project's pipeline files, ``params`` merged into its params.yaml."""
    path.mkdir(parents=True)
    shutil.copy2(REPO / ".gitignore", path / ".gitignore")
    if pipeline:
        for name in PROJECT_FILES:
            shutil.copy2(REPO / name, path / name)
        for name in PROJECT_DIRS:
            shutil.copytree(REPO / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        values = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), params or {})
        (path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    git("init", "-q", cwd=path)
    dvc("init", "-q", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-qm", "project", cwd=path)
    return path
