"""Files of a synthetic set: JPEG and compact JSON written into a scratch folder that becomes
the dataset folder only once everything is written.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import numpy as np

from ihl.files import replacing_folder

JPEG_QUALITY = 90


def write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def atomic_dir(out_dir: Path, overwrite: bool) -> AbstractContextManager[Path]:
    """A scratch folder that becomes ``out_dir`` only if the block succeeds
    (``ihl.files.replacing_folder``): a crash leaves ``out_dir`` as it was (absent, or the
    previous dataset) instead of a half-written dataset that later stages would read."""
    return replacing_folder(out_dir, overwrite=overwrite, hint="pass overwrite=True to replace it")


def r2(values) -> list[float]:
    return [round(float(v), 2) for v in values]
