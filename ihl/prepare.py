"""The prepare stage: check the chosen dataset and record what it holds.

Its output, ``index.json``, is the pipeline's record of the data a model was
trained on: per-split counts and a content fingerprint. Downstream stages
depend on it, so they re-run exactly when the data's content changes, and the
fingerprint becomes the data version in the model card.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ihl.data.coco import load_json, load_json_list, validate_coco
from ihl.data.errors import DatasetError
from ihl.data.mpii import validate_mpii
from ihl.files import write_json

DATASETS = ("synth", "coco", "mpii")
"""Dataset names the pipeline knows; ``synth`` is the generated set in the COCO layout."""

SHOWN_PROBLEMS = 10


def layout(dataset: str) -> str:
    """The file layout (``coco`` or ``mpii``) of a dataset name, or a DatasetError."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return "mpii" if dataset == "mpii" else "coco"


def check_dataset(dataset: str, root: Path, *, decode_images: bool = True) -> None:
    """Raise a DatasetError listing the first problems of ``root`` in ``dataset``'s layout."""
    kind = layout(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset} dataset folder not found: {root}")
    validate = validate_mpii if kind == "mpii" else validate_coco
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
    for path in sorted((root / "annotations").glob("person_keypoints_*.json")):
        data = load_json(path)
        counts[path.stem.removeprefix("person_keypoints_")] = {
            "images": len(data["images"]),
            "persons": len(data["annotations"]),
            "persons_with_keypoints": sum(a["num_keypoints"] > 0 for a in data["annotations"]),
        }
    return counts


def fingerprint(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in a fixed order.

    It changes when any file is added, removed, renamed or edited, and not when
    the folder is moved, copied or checked out by DVC elsewhere.
    """
    root = Path(root)
    files = sorted(
        Path(dirpath, name).relative_to(root).as_posix()
        for dirpath, _, names in os.walk(root, followlinks=True)
        for name in names
    )
    total = hashlib.sha256()
    for rel in files:
        with open(root / rel, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        total.update(f"{rel}\0{digest}\n".encode())
    return total.hexdigest()


def prepare(dataset: str, root: Path, out: Path, *, decode_images: bool = True) -> dict:
    """Validate ``root`` as ``dataset`` and write ``out/index.json``; returns its content.

    Nothing is written when the dataset has a problem: the DatasetError names it.
    """
    root = Path(root)
    check_dataset(dataset, root, decode_images=decode_images)
    kind = layout(dataset)
    digest = fingerprint(root)
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
