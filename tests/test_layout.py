"""The package layout: the core never loads the edge's heavy packages, and no ihl module
imports another that imports it back."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    "ihl.data.mpii",
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((REPO / "ihl").rglob("*.py"))}
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


def _top_level_imports(name: str, path: Path) -> set[str]:
    """The ihl modules ``name`` imports when it is imported: import statements outside
    functions (a function's imports run only when it is called)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo += [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
    return {m for m in found if m in MODULES and m != name}


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
    graph = {name: _top_level_imports(name, path) for name, path in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
