"""dvc.yaml's code dependencies, made from what each stage imports.

Each stage runs a few ihl modules (``STAGE_MODULES``); the files of every ihl module
they can import (``ihl.sources.closure``: any import statement, in functions too, read,
not run) are the stage's code deps, a package folder standing for its files when the
stage imports all of them. ``python scripts/dvc_deps.py`` rewrites the ``ihl/`` entries of
each stage's ``deps`` in dvc.yaml (other entries and comments stay); ``--check`` exits 1,
naming the stages, when dvc.yaml differs from that (tests/dvc runs the same check).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ihl.sources import closure, module_files
from ihl.train import TRAINING_CODE

REPO = Path(__file__).resolve().parents[1]

STAGE_MODULES = {
    "synth": ["ihl.data.synth"],
    "prepare": ["ihl.prepare"],
    "detector": ["ihl.detection.train", "ihl.detection.boxap", "ihl.edge.params"],
    "train": list(TRAINING_CODE),  # also what a resume must match
    "evaluate": ["ihl.evaluate"],
    "export": ["ihl.edge.export"],
}
"""The modules each stage's command calls into (the command line only passes arguments)."""

DATA_FILES = {"ihl/config.py": "ihl/presets"}
"""Files a module reads beside its code: the presets, which ``ihl.config`` loads."""


def _python_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def stage_deps(stage: str) -> list[str]:
    """The ``ihl/`` deps of ``stage``: its import closure, whole packages as folders."""
    modules = module_files()
    files = {modules[name] for name in closure(STAGE_MODULES[stage])}
    entries = {str(p.relative_to(REPO)) for p in files}
    entries |= {data for code, data in DATA_FILES.items() if REPO / code in files}
    for init in sorted(p for p in files if p.name == "__init__.py" and p.parent != REPO / "ihl"):
        folder = init.parent
        if _python_files(folder) <= files:
            inside = str(folder.relative_to(REPO)) + "/"
            entries = {e for e in entries if not e.startswith(inside)} | {inside[:-1]}
    return sorted(entries)


def render(text: str) -> str:
    """dvc.yaml's text with each stage's ``ihl/`` deps replaced by ``stage_deps``."""
    out: list[str] = []
    stage, in_deps, written = None, False, set()
    for line in text.splitlines(keepends=True):
        if found := re.match(r"^  (\w+):\s*$", line):
            stage, in_deps = found[1], False
        elif re.match(r"^    deps:\s*$", line):
            in_deps = True
        elif not re.match(r"^      - ", line):
            in_deps = False
        if in_deps and stage in STAGE_MODULES and line.startswith("      - ihl/"):
            if stage not in written:
                out += [f"      - {dep}\n" for dep in stage_deps(stage)]
                written.add(stage)
            continue
        out.append(line)
    return "".join(out)


def drifted(path: Path = REPO / "dvc.yaml") -> list[str]:
    """The stages whose ``ihl/`` deps in ``path`` differ from ``stage_deps``."""
    current, wanted = path.read_text(), render(path.read_text())
    if current == wanted:
        return []
    import yaml

    have, want = yaml.safe_load(current)["stages"], yaml.safe_load(wanted)["stages"]
    return [s for s in STAGE_MODULES if have[s]["deps"] != want[s]["deps"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only report drift (exit 1).")
    args = parser.parse_args()
    path = REPO / "dvc.yaml"
    stages = drifted(path)
    if args.check:
        if stages:
            print(f"dvc.yaml code deps out of date: {', '.join(stages)}; run {sys.argv[0]}")
        return 1 if stages else 0
    path.write_text(render(path.read_text()))
    print(f"dvc.yaml: rewrote {', '.join(stages)}" if stages else "dvc.yaml: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
