"""The serve image's entrypoint: check the mounted model files, then exec TorchServe.

    python3 verify_models.py torchserve ... --model-store=/mnt/models/model-store ...

KServe's storage initializer downloads a registry version to /mnt/models without
checking it, and the archive there carries handler code that TorchServe runs: anyone
who could write the bucket could run code in the serving pods. The InferenceService
that ``ihl registry manifest`` writes therefore pins the version's manifest by its
sha256 in ``IHL_MANIFEST_SHA256``, and before TorchServe starts this script checks,
in the folder above the model store, that

- manifest.json has exactly that sha256,
- every file the manifest lists is a regular file (no symlink) of the listed size and sha256,
- no other file is there (the registry's own .push-claim.json aside): TorchServe would
  load any other archive in the model store.

Anything else and it refuses to start (exit status 2), naming the file at fault.
Without ``IHL_MANIFEST_SHA256`` (a local ``docker run`` on an export folder, which has
no manifest) it says that nothing was verified and starts. Standard library only.
"""

import hashlib
import json
import os
import sys
from pathlib import Path, PurePosixPath

DIGEST_VARIABLE = "IHL_MANIFEST_SHA256"
MANIFEST = "manifest.json"
CLAIM = ".push-claim.json"


class Refused(Exception):
    """The mounted files are not the pinned version's."""


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_store(command: list[str]) -> Path:
    """The --model-store folder of a torchserve command line."""
    for i, arg in enumerate(command):
        if arg.startswith("--model-store="):
            return Path(arg.split("=", 1)[1])
        if arg == "--model-store" and i + 1 < len(command):
            return Path(command[i + 1])
    raise Refused(f"no --model-store in the command {command}")


def verify(folder: Path, digest: str) -> int:
    """Check ``folder`` against the manifest whose sha256 is ``digest``; returns the file count."""
    manifest_path = folder / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise Refused(f"{manifest_path} is missing (or a symlink): cannot verify the model files")
    found = sha256(manifest_path)
    if found != digest.lower():
        raise Refused(
            f"{manifest_path} has sha256 {found}, not the pinned {digest} "
            f"({DIGEST_VARIABLE}): these are not the files of the version that was deployed"
        )
    try:
        listed = json.loads(manifest_path.read_bytes())["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise Refused(f"{manifest_path} is not a registry manifest: {err}") from None
    for rel, expected in listed.items():
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
            raise Refused(f"{manifest_path} lists an unsafe path {rel!r}")
        path = folder.joinpath(*parts)
        if path.is_symlink() or not path.is_file():
            raise Refused(f"{path} is listed in the manifest but missing, or not a regular file")
        size = path.stat().st_size
        if size != expected["size"] or sha256(path) != expected["sha256"]:
            raise Refused(
                f"{path} ({size} bytes) differs from the manifest "
                f"({expected['size']} bytes, sha256 {expected['sha256'][:12]}...)"
            )
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise Refused(f"{path} is a symlink; a registry version holds none")
        if path.is_file() and rel not in listed and rel not in (MANIFEST, CLAIM):
            raise Refused(f"{path} is not in the manifest; refusing to serve unlisted files")
    return len(listed)


def main(command: list[str]) -> int:
    if not command:
        print("usage: verify_models.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    digest = os.environ.get(DIGEST_VARIABLE, "").strip()
    try:
        folder = model_store(command).parent
        if digest:
            count = verify(folder, digest)
            print(f"verified {count} model files in {folder} against manifest sha256 {digest}")
        else:
            print(f"{DIGEST_VARIABLE} is not set: serving {folder} unverified", file=sys.stderr)
    except Refused as err:
        print(f"refusing to start: {err}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
