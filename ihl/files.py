"""Files written whole or not at all, and JSON read with errors that name the file.

Every output goes to a hidden temporary file beside its target, is flushed to disk and
then renamed over the target (a rename within one folder is atomic), so neither a
reader nor a crash ever meets half a file, and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write that replaces ``path`` when the block ends without error.

    The temporary name is ``.NAME.RANDOM.tmp`` in the target's folder (created if
    needed); it is removed when the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing_folder(
    path: str | os.PathLike, *, overwrite: bool = False, hint: str = "it was left as it is"
) -> Iterator[Path]:
    """An empty folder to fill that becomes ``path`` when the block ends without error.

    The folder is a hidden sibling of ``path`` (``.NAME.partial-RANDOM``), renamed into
    place whole, so no reader ever meets half of it; on an error it is removed and ``path``
    is left as it was. A ``path`` that exists as a non-empty folder is replaced only with
    ``overwrite`` (the old one is renamed aside, then deleted), else FileExistsError (its
    message ends with ``hint``), raised before the block runs and again at its end if the
    folder appeared meanwhile.
    """
    path = Path(path)
    _check_replaceable(path, overwrite, hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    partial = path.with_name(f".{path.name}.partial-{token}")
    partial.mkdir()
    try:
        yield partial
        _check_replaceable(path, overwrite, hint)
        if path.is_dir() and any(path.iterdir()):
            old = path.with_name(f".{path.name}.old-{token}")
            path.rename(old)
            partial.rename(path)
            shutil.rmtree(old)
        else:
            partial.replace(path)  # over an empty folder, or none
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _check_replaceable(path: Path, overwrite: bool, hint: str) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; {hint}")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with replacing(path) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """JSON without NaN or Infinity (other readers reject them): a ValueError names the key."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` written whole; torch is imported here so light callers need not load it."""
    import torch

    with replacing(path) as handle:
        torch.save(obj, handle)
    return Path(path)


def load_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; every way that can fail raises ``error`` with a message naming
    the file, so each caller reports bad input in its own exception type."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not valid JSON: {err}") from None
    except OSError as err:
        raise error(f"{path}: cannot read: {err}") from None


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock: two runs must not write one folder."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s exclusive lock (an ``flock`` on ``folder/.lock``) for the block.

    A second holder, in this process or another, gets FolderBusyError naming the first
    (its pid and host, written into the lock file). The kernel drops the lock when its
    process dies, so a killed run leaves nothing to clean up. Creates ``folder``.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 (held past here)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FolderBusyError(
            f"{folder} is in use by {holder}: two runs would overwrite each other's files; "
            "wait for that run to end or use another folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield folder
    finally:
        handle.close()  # closing releases the lock


TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
"""The names ``replacing`` writes to before its rename."""


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a process killed mid-write left in ``folder`` (``replacing``
    removes its own on errors, but SIGKILL skips that); returns them. Only safe while nobody
    writes there: hold ``folder_lock``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
