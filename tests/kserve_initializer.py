"""KServe's storage initializer, run as its container runs it (kserve-storage's own code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INITIALIZER = "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])"
"""What KServe's storage-initializer container runs: Storage.download(storageUri, /mnt/models)."""


def kserve_download(storage_uri: str, dest: Path) -> Path:
    """Download ``storage_uri`` to ``dest`` with KServe's own storage code (kserve-storage),
    in a process of its own as the initializer container is, S3 settings from the
    environment (``s3_env``)."""
    done = subprocess.run(
        [sys.executable, "-c", INITIALIZER, storage_uri, str(dest)],
        env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dest
