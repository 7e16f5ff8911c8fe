"""The prepare stage: check the chosen dataset and record what it holds.

Its output, ``index.json``, is the pipeline's record of the data a model was
trained on: per-split counts and a content fingerprint. Downstream stages
depend on it, so they re-run exactly when the data's content changes, and the
fingerprint becomes the data version in the model card.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ihl.data.coco_format import load_json, load_json_list, validate_coco
from ihl.data.crowdpose_format import validate_crowdpose
from ihl.data.errors import DatasetError
from ihl.data.mpii_format import validate_mpii
from ihl.files import write_json

DATASETS = ("synth", "coco", "mpii", "crowdpose")
"""Dataset names the pipeline knows; ``synth`` is the generated set in the COCO layout."""

SHOWN_PROBLEMS = 10
FINGERPRINT_CACHE_FORMAT = "ihl-fingerprint-cache/1"


def layout(dataset: str) -> str:
    """The file layout (``coco``, ``mpii`` or ``crowdpose``) of a dataset name, or a
    DatasetError."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return "coco" if dataset == "synth" else dataset


def check_dataset(dataset: str, root: Path, *, decode_images: bool = True) -> None:
    """Raise a DatasetError listing the first problems of ``root`` in ``dataset``'s layout."""
    kind = layout(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset} dataset folder not found: {root}")
    validate = {"coco": validate_coco, "mpii": validate_mpii, "crowdpose": validate_crowdpose}[kind]
    problems = validate(root, decode_images=decode_images)
    if problems:
        shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
        more = len(problems) - SHOWN_PROBLEMS
        tail = f"\n  ... and {more} more (`ihl data check {root} --dataset {kind}` lists all)"
        raise DatasetError(
            f"{root} is not a valid {kind} dataset ({len(problems)} problem(s)):\n  {shown}"
            + (tail if more > 0 else "")
        )


def split_counts(kind: str, root: Path) -> dict[str, dict[str, int]]:
    """Images and persons per split, read from the annotation files."""
    counts = {}
    if kind == "mpii":
        for path in sorted((root / "annotations").glob("mpii_*.json")):
            entries = load_json_list(path, "entries")
            counts[path.stem.removeprefix("mpii_")] = {
                "images": len({str(e["image"]) for e in entries}),
                "persons": len(entries),
            }
        return counts
    prefix = "mmpose_crowdpose_" if kind == "crowdpose" else "person_keypoints_"
    for path in sorted((root / "annotations").glob(f"{prefix}*.json")):
        data = load_json(path)
        counts[path.stem.removeprefix(prefix)] = {
            "images": len(data["images"]),
            "persons": len(data["annotations"]),
            "persons_with_keypoints": sum(a["num_keypoints"] > 0 for a in data["annotations"]),
        }
    return counts


def fingerprint(root: Path, cache: Path | None = None) -> str:
    """SHA-256 over every file's relative path and bytes, in a fixed order.

    It changes when any file is added, removed, renamed or edited, and not when
    the folder is moved, copied or checked out by DVC elsewhere.

    ``cache``: a JSON file of each file's digest keyed by (path, size, mtime), so a
    run over an unchanged COCO (123k images) stats the files instead of reading
    them. A file rewritten with the same size and modification time keeps its old
    digest: edit data in place only with tools that update mtimes (all usual ones
    do), or pass no cache.
    """
    root = Path(root)
    files = sorted(
        Path(dirpath, name).relative_to(root).as_posix()
        for dirpath, _, names in os.walk(root, followlinks=True)
        for name in names
    )
    known = _read_cache(cache) if cache is not None else {}
    seen: dict[str, list] = {}
    total = hashlib.sha256()
    for rel in files:
        stat = os.stat(root / rel)
        entry = known.get(rel)
        if entry is not None and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            digest = entry[2]
        else:
            with open(root / rel, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        seen[rel] = [stat.st_size, stat.st_mtime_ns, digest]
        total.update(f"{rel}\0{digest}\n".encode())
    if cache is not None and seen != known:
        write_json(Path(cache), {"format": FINGERPRINT_CACHE_FORMAT, "files": seen})
    return total.hexdigest()


def _read_cache(path: Path) -> dict[str, list]:
    """The cached digests; an unreadable or foreign cache is only a slower run."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FINGERPRINT_CACHE_FORMAT:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def prepare(
    dataset: str,
    root: Path,
    out: Path,
    *,
    decode_images: bool = False,
    fingerprint_cache: Path | None = None,
) -> dict:
    """Validate ``root`` as ``dataset`` and write ``out/index.json``; returns its content.

    The check reads every annotation and finds every image; decoding every image as
    well (``decode_images``) takes minutes on COCO, so it is opt-in (``ihl data
    check`` decodes by default). ``fingerprint_cache`` as in ``fingerprint``.
    Nothing is written when the dataset has a problem: the DatasetError names it.
    """
    root = Path(root)
    check_dataset(dataset, root, decode_images=decode_images)
    kind = layout(dataset)
    digest = fingerprint(root, fingerprint_cache)
    summary = {
        "dataset": dataset,
        "layout": kind,
        "root": root.as_posix(),
        "splits": split_counts(kind, root),
        "fingerprint": digest,
        "version": f"{dataset}-{digest[:12]}",
    }
    write_json(Path(out) / "index.json", summary)
    return summary
