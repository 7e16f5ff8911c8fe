"""The package layout: the core never loads the edge's heavy packages, the data commands
never load torch, and no ihl module imports another that imports it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sample_data import COCO_SAMPLE, MPII_SAMPLE

from ihl.sources import imports, module_files

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("dvc", "dvclive", "kfp", "kfp_server_api", "boto3", "botocore", "ts", "model_archiver")
"""Top-level packages of DVC, DVCLive, Kubeflow Pipelines, the AWS SDK and TorchServe."""
NAMED_CORE = (
    "ihl.config",
    "ihl.ops",
    "ihl.losses",
    "ihl.models",
    "ihl.data",
    "ihl.data.build",
    "ihl.data.coco",
    "ihl.data.coco_format",
    "ihl.data.mpii",
    "ihl.data.mpii_format",
    "ihl.data.synth",
    "ihl.data.transforms",
    "ihl.train",
    "ihl.evaluate",
    "ihl.inference",
    "ihl.predict",
    "ihl.checkpoint",
    "ihl.metrics",
    "ihl.metrics.coco",
    "ihl.prepare",
    "ihl.files",
    "ihl.image_io",
    "ihl.boxes",
)


MODULES = module_files(REPO / "ihl")
CORE = [m for m in MODULES if not m.startswith(("ihl.edge", "ihl.cli"))]
EDGE = [m for m in MODULES if m.startswith(("ihl.edge", "ihl.cli"))]


@pytest.fixture(scope="module")
def heavy_loaded() -> dict[str, list[str]]:
    """The heavy packages one fresh interpreter holds after importing the core, then after
    importing the edge and CLI modules as well (one interpreter: importing torch is slow)."""
    code = (
        "import importlib, json, sys\n"
        "heavy, groups = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])\n"
        "loaded = {}\n"
        "for group, names in groups.items():\n"
        "    for name in names:\n"
        "        importlib.import_module(name)\n"
        "    loaded[group] = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "print(json.dumps(loaded))\n"
    )
    groups = json.dumps({"core": CORE, "edge": EDGE})
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(HEAVY), groups],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return json.loads(done.stdout)


def test_core_modules_are_all_found():
    assert set(NAMED_CORE) <= set(CORE)


def test_importing_the_core_loads_no_edge_package(heavy_loaded):
    assert heavy_loaded["core"] == []


def test_edge_and_cli_modules_import_their_heavy_packages_lazily(heavy_loaded):
    assert heavy_loaded["edge"] == []


@pytest.mark.parametrize(
    "args",
    [
        ["prepare", "--dataset", "coco", "--root", "{coco}", "--out", "{out}"],
        ["prepare", "--dataset", "mpii", "--root", "{mpii}", "--out", "{out}"],
        ["data", "check", "{coco}", "--dataset", "coco"],
    ],
    ids=["prepare-coco", "prepare-mpii", "data-check"],
)
def test_data_commands_load_no_torch(args, tmp_path):
    """`ihl prepare` (run by every `dvc repro` whose data changed) and `ihl data` read and
    check files only: they start in under a second instead of loading torch and torchvision."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['ihl', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('ihl.cli.main', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision'}))\n"
    )
    where = {"coco": COCO_SAMPLE, "mpii": MPII_SAMPLE, "out": tmp_path / "out"}
    argv = [arg.format(**where) for arg in args]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_ihl_modules():
    """Imports inside functions count: a lazy import hides a cycle from the interpreter, not
    from the reader."""
    graph = {name: imports(name, path, MODULES) for name, path in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_imports_inside_functions_are_read(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from . import a\n")
    modules = module_files(package)
    assert imports("pkg.a", modules["pkg.a"], modules) == {"pkg", "pkg.b"}
    assert imports("pkg.b", modules["pkg.b"], modules) == {"pkg", "pkg.a"}


def test_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
