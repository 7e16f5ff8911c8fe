"""serving/verify_models.py, the serve image's entrypoint: TorchServe starts only on the
files of the pinned registry version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "serving" / "verify_models.py"
FILES = {
    "model-store/ihl.mar": b"archive with handler code",
    "config/config.properties": b"load_models=all\n",
    "model_card.md": b"# ihl 3\n",
}


@pytest.fixture
def version(tmp_path) -> tuple[Path, str]:
    """A registry version as KServe mounts it, and its manifest's sha256."""
    folder = tmp_path / "models"
    entries = {}
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = json.dumps({"name": "ihl", "version": "3", "files": entries}).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / ".push-claim.json").write_text("{}")
    return folder, hashlib.sha256(manifest).hexdigest()


def _start(folder: Path, digest: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IHL_MANIFEST_SHA256"}
    if digest is not None:
        env["IHL_MANIFEST_SHA256"] = digest
    server = [sys.executable, "-c", "print('torchserve started')"]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *server, f"--model-store={folder / 'model-store'}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_pinned_version_starts(version):
    folder, digest = version
    done = _start(folder, digest)
    assert done.returncode == 0, done.stderr
    assert "verified 3 model files" in done.stdout
    assert "torchserve started" in done.stdout


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2
    assert "torchserve started" not in done.stdout
    assert "refusing to start" in done.stderr
    for word in words:
        assert word in done.stderr


def test_another_manifest_is_refused(version):
    folder, digest = version
    _refused(_start(folder, "0" * 64), "manifest.json", "pinned")


def test_a_changed_archive_is_refused(version):
    folder, digest = version
    (folder / "model-store" / "ihl.mar").write_bytes(b"archive with other handler code")
    _refused(_start(folder, digest), "ihl.mar", "differs from the manifest")


def test_an_added_archive_is_refused(version):
    folder, digest = version
    (folder / "model-store" / "evil.mar").write_bytes(b"x")
    _refused(_start(folder, digest), "evil.mar", "not in the manifest")


def test_a_symlink_is_refused(version, tmp_path):
    folder, digest = version
    outside = tmp_path / "outside.md"
    outside.write_bytes(FILES["model_card.md"])
    (folder / "model_card.md").unlink()
    (folder / "model_card.md").symlink_to(outside)
    _refused(_start(folder, digest), "model_card.md")


def test_a_missing_file_is_refused(version):
    folder, digest = version
    (folder / "config" / "config.properties").unlink()
    _refused(_start(folder, digest), "config.properties", "missing")


def test_without_a_pinned_digest_it_says_so_and_starts(version):
    folder, _ = version
    done = _start(folder, None)
    assert done.returncode == 0
    assert "unverified" in done.stderr and "torchserve started" in done.stdout
