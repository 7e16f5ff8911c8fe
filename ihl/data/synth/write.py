"""Files of a synthetic set: JPEG and compact JSON written into a scratch folder that becomes
the dataset folder only once everything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

JPEG_QUALITY = 90


def write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_file() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it"
        )


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a sibling scratch directory that becomes out_dir only if the body succeeds.

    A crash leaves out_dir as it was (absent, or the previous dataset) instead of a
    half-written dataset that later stages would silently read.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{token}")
    tmp.mkdir()
    try:
        yield tmp
        _check_target(out_dir, overwrite)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            old = out_dir.with_name(f".{out_dir.name}.old-{token}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def r2(values) -> list[float]:
    return [round(float(v), 2) for v in values]
