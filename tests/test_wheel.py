"""The built wheel works without a checkout: installed into a fresh virtual environment
(the locked dependencies, from uv's cache), `ihl export` finds its serving files and
`ihl pipeline compile` its components and pipeline, run far from the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

MAKE_CHECKPOINT = """
import sys
from ihl import config
from ihl.checkpoint import save_model
from ihl.models.pose import build_model
cfg = config.load("sample", {"model.input_size": [32, 32], "model.deconv_channels": 16})
save_model(sys.argv[1], build_model(cfg.model), cfg)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh environment holding the built wheel and nothing of the
    repository."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    base = tmp_path_factory.mktemp("wheel")
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(base / "dist")], cwd=REPO, **run)
    (wheel,) = (base / "dist").glob("ihl-*.whl")
    pins = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-q"],
        cwd=REPO,
        **run,
    ).stdout
    (base / "requirements.txt").write_text(pins)
    venv = base / "venv"
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(venv)], cwd=base, **run)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r",
         str(base / "requirements.txt"), str(wheel)],
        cwd=base,
        **run,
    )  # fmt: skip
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``args`` in the fresh environment. Python's default bytecode caching is kept on (the
    first command writes the .pyc files, uv installs none) even where this shell turned it off."""
    drop = ("IHL_SERVING_DIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_installed_wheel_exports_and_compiles_without_a_checkout(installed, tmp_path):
    where = _run(installed, "python", "-c", "import ihl; print(ihl.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert REPO not in Path(where.stdout.strip()).parents

    made = _run(installed, "python", "-c", MAKE_CHECKPOINT, "model.pt", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    export = _run(installed, "ihl", "export", "model.pt", "-o", "out", cwd=tmp_path)
    assert export.returncode == 0, export.stdout + export.stderr
    assert (tmp_path / "out" / "model-store" / "ihl.mar").is_file()
    assert (tmp_path / "out" / "config" / "config.properties").is_file()

    compiled = _run(installed, "ihl", "pipeline", "compile", "-o", "p.yaml", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert {"prepare", "train", "detector", "evaluate", "export", "register"} <= {
        name.removeprefix("comp-") for name in spec["components"]
    }
