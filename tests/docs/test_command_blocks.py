"""Every shell block of the README and the manual's pages below, run as a newcomer would
(slow tier), each in its own scratch copy of a project where the main job has run.

The copy holds the repository's files, a small synthetic set at ``data/synth`` and the main
job's outputs that the pages start from (``model/checkpoints``, ``detector/``, ``eval/``),
made quickly by the same commands at tiny sizes. A block runs under ``bash -e`` with the
project's environment reachable only through ``uv run`` (as after the README's set-up, where
a bare ``ihl`` is "command not found"). What the page says a block writes is then checked:
``#   PATH  what`` comment lines and ``# writes PATH`` in the block, and the listing block
that follows it. A block that cannot run here is listed in SKIPPED with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PAGES = (
    "README.md",
    "docs/index.md",
    "docs/inference.md",
    "docs/evaluation.md",
    "docs/serving.md",
    "docs/benchmarks.md",
    "docs/architecture.md",
    "docs/research-log.md",
)
SKIPPED = {
    ("README.md", "pip install uv && uv sync --compile-bytecode && uv run dvc repro"): (
        "the main job at full size (337 s on the quiet machine); tests/dvc/test_pipeline.py "
        "runs the same `dvc repro` and `dvc exp run` on a small set"
    ),
    ("README.md", "uv run ruff check ."): "the checks CI runs, this test among them",
    ("docs/evaluation.md", "image_info_test-dev2017"): (
        "needs COCO test-dev (images, image-info file and detections), not in the repository"
    ),
    ("docs/serving.md", "mkdir -p serve"): (
        "starts TorchServe on config.properties' fixed ports 8080-8082, which other tests may "
        "hold; tests/serving/test_rest_docs.py runs the same server with the REST page's "
        "requests on free ports"
    ),
    ("docs/serving.md", "kubectl apply"): "needs a Kubernetes cluster with KServe",
    ("docs/inference.md", "benchmarks/inference.py [--presets"): (
        "a usage synopsis ([...] are optional arguments); tests/benchmarks runs each script"
    ),
    ("docs/benchmarks.md", "benchmarks/gpu.sh --out"): (
        "the full GPU benchmark, for the GPU machine; tests/test_gpu_smoke.py runs its "
        "--smoke with that machine's packages and the downloaded wheels"
    ),
    ("docs/benchmarks.md", "benchmarks/loss_speed.py"): (
        "full-size benchmarks (minutes to hours each); tests/benchmarks runs every script at "
        "tiny sizes"
    ),
}
SHIM = """
uv() {
    [ "$1" = run ] || { echo "uv $1: only 'uv run' is run by this test" >&2; return 1; }
    shift
    local command=$1
    shift
    if [ -x "$IHL_VENV_BIN/$command" ]; then "$IHL_VENV_BIN/$command" "$@"; else "$command" "$@"; fi
}
"""
WRITES = re.compile(r"^#\s+(\S+\.\w+)(?:\s|$)|#\s*writes (\S+)")


def blocks(page: str) -> list[dict]:
    """The fenced blocks of a page: language, first line number and text."""
    found, current = [], None
    for number, line in enumerate((REPO / page).read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current = {"page": page, "lang": line[3:].strip(), "line": number, "lines": []}
            else:
                current["text"] = "\n".join(current.pop("lines"))
                found.append(current)
                current = None
        elif current is not None:
            current["lines"].append(line)
    return found


def shell_blocks() -> list[tuple[dict, dict | None]]:
    """Each bash block with the plain block right after it (a listing of what it writes)."""
    pairs = []
    for page in PAGES:
        found = blocks(page)
        for i, block in enumerate(found):
            if block["lang"] == "bash":
                after = found[i + 1] if i + 1 < len(found) else None
                pairs.append((block, after if after and after["lang"] == "" else None))
    return pairs


def skip_reason(block: dict) -> str | None:
    for (page, text), reason in SKIPPED.items():
        if page == block["page"] and text in block["text"]:
            return reason
    return None


def promised_paths(block: dict, listing: dict | None) -> list[str]:
    paths = []
    for line in block["text"].splitlines():
        match = WRITES.search(line.strip())
        if match:
            paths.append(match.group(1) or match.group(2))
    if listing is not None:
        paths += [line.split()[0] for line in listing["text"].splitlines() if line.strip()]
    return paths


def run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The repository's files, committed in a fresh Git repository, after a tiny main job."""
    from ihl.data.synth import make_coco_synth

    root = tmp_path_factory.mktemp("docs") / "project"
    tracked = run(["git", "ls-files", "-z"], REPO).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        assert run([*git, *args], root).returncode == 0
    make_coco_synth(root / "data/synth", 8, 4, image_size=(160, 120))
    ihl = str(Path(sys.executable).with_name("ihl"))
    steps = [
        [ihl, "train", "-c", "sample", "-o", "model", "--set", "train.epochs=1",
         "--set", "train.val_interval=1", "--set", "train.lr_steps=[]",
         "--set", "train.batch_size=4", "--set", "train.warmup_iters=1"],
        [ihl, "detector", "train", "data/synth", "-o", "detector", "-c", "sample",
         "--set", "detector.epochs=1"],
        [ihl, "evaluate", "model/checkpoints/final.pt", "-o", "eval",
         "--best", "model/checkpoints/best.pt"],
    ]  # fmt: skip
    for step in steps:
        done = run(step, root)
        assert done.returncode == 0, f"{step}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return root


def test_every_block_runs_or_says_why_not():
    listed = {(b["page"], b["line"]) for b, _ in shell_blocks()}
    assert listed, "no shell blocks found"
    for page, text in SKIPPED:
        assert any(text in b["text"] for b, _ in shell_blocks() if b["page"] == page), (
            f"SKIPPED names a block that {page} no longer has: {text!r}"
        )


@pytest.mark.parametrize(
    ("block", "listing"),
    shell_blocks(),
    ids=lambda item: f"{item['page']}:{item['line']}" if isinstance(item, dict) else "",
)
def test_block(block, listing, project, tmp_path):
    reason = skip_reason(block)
    if reason is not None:
        pytest.skip(reason)
    scratch = tmp_path / "project"
    shutil.copytree(project, scratch, symlinks=True)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(venv_bin)
    )
    done = run(
        ["bash", "-e", "-o", "pipefail", "-c", SHIM + block["text"]],
        scratch,
        PATH=path,
        IHL_VENV_BIN=venv_bin,
    )
    where = f"{block['page']} line {block['line']}"
    assert done.returncode == 0, f"{where} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    missing = [p for p in promised_paths(block, listing) if not (scratch / p).exists()]
    assert not missing, f"{where} says it writes {missing}, which are not there"
