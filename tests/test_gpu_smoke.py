"""``benchmarks/gpu.sh --smoke`` as it would run on the project's GPU machine: an interpreter
that sees only that machine's packages (benchmarks/gpu-machine.txt) plus the wheels
benchmarks/gpu-wheels.txt lists, fetched by scripts/gpu-wheels.sh and installed by gpu.sh
itself, and no uv on the PATH.

CI has Python 3.11 only, so the environment is a 3.11 one: the machine's packages at
uv.lock's versions, the wheels at the listed versions for CPython 3.11. It is built once per
content of those files, from uv's cache, and kept in pytest's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from sample_data import COCO_ANN, COCO_IMAGES

from ihl.data.coco import CocoKeypoints

ROOT = Path(__file__).resolve().parents[1]
WHEEL_LIST = ROOT / "benchmarks" / "gpu-wheels.txt"
MACHINE_LIST = ROOT / "benchmarks" / "gpu-machine.txt"
NEEDED = (
    "torch torchvision numpy scipy opencv-python-headless timm typer pyyaml rich tqdm pillow pip"
).split()
"""The machine's packages that benchmarks/gpu.py imports (and pip, which gpu.sh runs)."""


def names(path: Path) -> list[str]:
    """The lines of a list file that are not comments or blank."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {normalise(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def run(*args: str | Path, **kwargs) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def gpu():
    """benchmarks/gpu.py as a module (it imports benchmarks/train.py as ``train``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu


def test_a_failing_row_loses_no_later_row(gpu, tmp_path, capsys):
    """Each row is printed and appended as it finishes; an error (here a GPU out of memory)
    fails its row only."""

    def out_of_memory() -> str:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    rows = [
        ("step", "first", lambda: "1.0"),
        ("step", "second", out_of_memory),
        ("loader", "third", lambda: "3.0"),
    ]
    out = tmp_path / "rows.txt"
    assert gpu.report(iter(rows), out) == 1
    lines = out.read_text().splitlines()
    assert "first 1.0" in lines and "third 3.0" in lines
    assert (
        "second failed: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in lines
    )
    assert lines.index(gpu.TABLES["loader"][0]) < lines.index("third 3.0")
    assert capsys.readouterr().out == out.read_text()


def test_a_repeated_set_gives_a_loader_every_batch_it_asks_for(gpu):
    """The loader rows time 100 batches; the generated set holds a few: it is repeated, each
    repeat the same sample, augmented for the sampler's epoch."""
    dataset = CocoKeypoints(COCO_ANN, COCO_IMAGES, train=True, input_size=(64, 64))
    repeated = gpu.Repeated(dataset, 3 * len(dataset) + 1)
    assert len(repeated) == 4 * len(dataset) and repeated.spec is dataset.spec
    again, first = repeated[1, len(dataset) + 2], dataset[1, 2]
    assert torch.equal(again["image"], first["image"]) and again["image_id"] == first["image_id"]


def test_the_wheel_list_is_the_locked_versions_of_what_the_machine_lacks():
    machine = set(names(MACHINE_LIST))
    locked = locked_versions()
    listed = dict(line.split("==") for line in names(WHEEL_LIST))
    assert {normalise(n): v for n, v in listed.items()} == {
        normalise(n): locked[normalise(n)] for n in listed
    }
    assert set(NEEDED) <= machine and "pydantic" not in machine and "geomloss" not in machine
    # typing-extensions is there too, but older than pydantic needs on some images
    assert {normalise(n) for n in listed} & machine == {"typing-extensions"}


@pytest.fixture(scope="session")
def machine_env(request, tmp_path_factory) -> tuple[Path, Path]:
    """(python, wheels folder): a virtual environment holding the machine's packages this
    benchmark needs and nothing the machine lacks, and the listed wheels for its Python."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("building the machine's environment needs uv (the project's tool)")
    key = hashlib.sha256(
        b"".join(p.read_bytes() for p in (ROOT / "uv.lock", WHEEL_LIST, MACHINE_LIST))
        + " ".join(NEEDED).encode()
    ).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    name = f"gpu-machine-{key}"
    home = Path(cache.mkdir(name) if cache else tmp_path_factory.mktemp(name))
    venv, wheels = home / "venv", home / "wheels"
    python = venv / "bin" / "python"
    if (home / "ready").exists():
        return python, wheels
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    run(uv, "venv", "--quiet", "--python", base, venv)
    constraints = home / "constraints.txt"
    export = "export --frozen --no-hashes --all-groups --no-emit-project --no-header --no-annotate"
    constraints.write_text(run(uv, *export.split(), cwd=ROOT))
    run(uv, "pip", "install", "--quiet", "--python", python, "-c", constraints, *NEEDED)
    machine = set(names(MACHINE_LIST))
    installed = json.loads(run(uv, "pip", "list", "--python", python, "--format", "json"))
    extra = sorted({normalise(p["name"]) for p in installed} - machine)
    if extra:  # brought by a newer version than the machine's; the machine has none of them
        run(uv, "pip", "uninstall", "--quiet", "--python", python, *extra)
    env = os.environ | {"PYTHON": str(python), "WHEELS": str(wheels)}
    env["PYTHON_VERSION"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    run("bash", ROOT / "scripts" / "gpu-wheels.sh", env=env)
    (home / "ready").touch()
    return python, wheels


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_with_the_machines_packages_and_no_uv(machine_env, tmp_path):
    python, wheels = machine_env
    dirs = os.environ["PATH"].split(os.pathsep)
    path = os.pathsep.join(d for d in dirs if not shutil.which("uv", path=d))
    assert shutil.which("uv", path=path) is None
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "PYTHON": str(python),
        "WHEELS": str(wheels),
        "OMP_NUM_THREADS": "2",
    }
    missing = subprocess.run([python, "-c", "import pydantic"], capture_output=True, env=env)
    assert missing.returncode != 0  # only the wheels bring it
    out = tmp_path / "rows.txt"
    done = subprocess.run(
        ["bash", ROOT / "benchmarks" / "gpu.sh", "--smoke", "--out", out],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = out.read_text()
    assert "failed" not in rows
    for title in ("1. training step", "2. end to end", "3. training loader", "4. evaluation"):
        assert title in rows
    assert "bf16+NHWC+compile" in rows.splitlines()[-1]
