"""Datasets under DVC: add a COCO or MPII folder to the project, push it to and pull it
from an S3 remote.

The real ``dvc`` command does the versioning; this module adds what it lacks for
these datasets: the layout is checked before anything is copied, the folder
appears under data/ whole or not at all, and the S3 remote is tried with the
same settings DVC will use before a push or pull starts, so a missing credential
or a wrong endpoint is a message saying what to fix instead of a stack of
retries (and nothing is transferred).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from ihl.prepare import check_dataset

ADDABLE = ("coco", "mpii", "crowdpose")
"""Datasets users bring; the synthetic set is made by the pipeline itself."""

LAYOUT = {
    "coco": (
        "annotations/person_keypoints_train2017.json",
        "annotations/person_keypoints_val2017.json",
        "train2017",
        "val2017",
    ),
    "mpii": ("annotations/mpii_train.json", "annotations/mpii_val.json", "images"),
    "crowdpose": (
        "annotations/mmpose_crowdpose_trainval.json",
        "annotations/mmpose_crowdpose_test.json",
        "images",
    ),
}
"""What each dataset's documented layout (docs/data.md) must hold for the pipeline to train
on its train split and score its val split."""

CONNECT_TIMEOUT_S = 5


class DataStoreError(Exception):
    """The project, the dataset or the remote is not usable; the message says what to do."""


def project_root(start: Path | None = None) -> Path:
    """The DVC project enclosing ``start`` (default: the working directory)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(start or Path.cwd())))
    except NotDvcRepoError:
        raise DataStoreError(
            f"{start or Path.cwd()} is not inside a DVC project: run this in the ihl checkout"
        ) from None


def run_dvc(args: Sequence[str], root: Path) -> None:
    """Run the ``dvc`` command line of this environment in ``root``; its output is shown as is."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=False)
    if done.returncode != 0:
        raise DataStoreError(f"`dvc {' '.join(args)}` failed (exit {done.returncode}), see above")


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _copy_tree(source: Path, target: Path, progress: bool) -> None:
    """``shutil.copytree`` with a per-file progress bar."""
    from tqdm import tqdm

    total = sum(len(files) for _, _, files in os.walk(source))
    with tqdm(
        total=total, desc=f"copying to {target.parent}", unit="file", disable=not progress
    ) as bar:

        def copy(src: str, dst: str) -> str:
            done = shutil.copy2(src, dst)
            bar.update()
            return done

        shutil.copytree(source, target, copy_function=copy)


def add_dataset(
    name: str,
    source: Path,
    *,
    root: Path | None = None,
    move: bool = False,
    replace: bool = False,
    decode_images: bool = True,
    progress: bool = False,
) -> Path:
    """Check ``source`` as a ``name`` dataset, place it at data/<name> and ``dvc add`` it.

    The copy is assembled in a hidden sibling and renamed into place (``move``
    renames the folder itself when it is on the same file system, else copies it
    and deletes the source last), and an existing data/<name> (with ``replace``)
    is set aside until ``dvc add`` has succeeded: any failure leaves data/ and the
    source as they were. With ``progress``, each step is announced on stderr and the
    copy shows a progress bar (real datasets take minutes). Returns the .dvc file to
    commit with Git.
    """
    if name not in ADDABLE:
        raise DataStoreError(
            f"unknown dataset {name!r}: `ihl data add` takes {' or '.join(ADDABLE)} "
            "(the synthetic set is made by the pipeline's synth stage)"
        )
    root = project_root(root)
    source = Path(source).absolute()
    target = root / "data" / name
    if not source.is_dir():
        raise DataStoreError(f"dataset folder not found: {source}")
    in_place = source.resolve() == target.resolve()
    if target.exists() and not (in_place or replace):
        raise DataStoreError(
            f"{target} already exists: pass --replace to record this folder as its new version"
        )
    if progress:
        checking = "decoding every image" if decode_images else "checking that images exist"
        print(f"checking {source} as {name} ({checking})", file=sys.stderr)
    missing = [part for part in LAYOUT[name] if not (source / part).exists()]
    if missing:
        raise DataStoreError(
            f"{source} is not in the {name} layout (docs/data.md#layouts): missing "
            + ", ".join(missing)
        )
    check_dataset(name, source, decode_images=decode_images)
    if in_place:
        run_dvc(["add", str(target.relative_to(root))], root)
        return target.with_name(f"{name}.dvc")

    target.parent.mkdir(parents=True, exist_ok=True)
    staged = _sibling(target, "partial")
    old = _sibling(target, "old")
    renamed = False
    try:
        if move:
            try:
                os.rename(source, staged)
                renamed = True
            except OSError as err:
                if err.errno != errno.EXDEV:
                    raise
        if not renamed:
            _copy_tree(source, staged, progress)
    except BaseException:
        if not renamed:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    staged.rename(target)
    try:
        run_dvc(["add", str(target.relative_to(root))], root)
    except BaseException:
        if renamed:
            target.rename(source)
        else:
            shutil.rmtree(target, ignore_errors=True)
        if old.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if move and not renamed:
        shutil.rmtree(source)
    return target.with_name(f"{name}.dvc")


def remote_settings(root: Path, remote: str | None = None) -> tuple[str, dict]:
    """(name, settings) of the DVC remote a push or pull would use, merged over all of
    DVC's config files (.dvc/config, .dvc/config.local, user and system)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        name = remote or config["core"].get("remote")
        remotes = dict(config.get("remote", {}))
    if not name:
        raise DataStoreError(
            "no DVC remote is configured: add one with "
            "`dvc remote add -d store s3://BUCKET/PATH` (docs/data.md, An S3 remote)"
        )
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise DataStoreError(f"no DVC remote named {name!r} (configured: {known})")
    return name, remotes[name]


def check_s3_remote(name: str, settings: dict) -> None:
    """Try the remote's bucket with DVC's own settings; raise a DataStoreError saying what
    to fix when the credentials are missing or refused, the endpoint cannot be reached or
    the bucket does not exist. Non-S3 remotes are left to DVC."""
    url = str(settings.get("url", ""))
    if not url.startswith("s3://"):
        return
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ProfileNotFound,
    )

    bucket = urlparse(url).netloc
    endpoint = settings.get("endpointurl")
    where = f"remote {name!r} ({url}{f' at {endpoint}' if endpoint else ''})"
    set_keys = (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or keep them "
        f"out of Git in .dvc/config.local with `dvc remote modify --local {name} "
        f"access_key_id ID` and `dvc remote modify --local {name} secret_access_key KEY`"
    )
    core = botocore.session.Session(profile=settings.get("profile"))
    for key, variable in (("credentialpath", "credentials_file"), ("configpath", "config_file")):
        if settings.get(key):
            core.set_config_variable(variable, str(settings[key]))
    try:
        client = boto3.Session(botocore_session=core).client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.get("region"),
            aws_access_key_id=settings.get("access_key_id"),
            aws_secret_access_key=settings.get("secret_access_key"),
            aws_session_token=settings.get("session_token"),
            verify=settings.get("ssl_verify", True),
            config=Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=2 * CONNECT_TIMEOUT_S,
                retries={"max_attempts": 1},
            ),
        )
        client.head_bucket(Bucket=bucket)
    except ProfileNotFound as err:
        raise DataStoreError(f"{where}: {err}; fix the remote's profile or {set_keys}") from None
    except NoCredentialsError:
        raise DataStoreError(f"no S3 credentials for {where}: {set_keys}") from None
    except (EndpointConnectionError, ConnectTimeoutError) as err:
        raise DataStoreError(
            f"cannot reach the S3 endpoint of {where}: {err}. Check that the server is up, "
            f"or set the endpoint with `dvc remote modify {name} endpointurl URL`"
        ) from None
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise DataStoreError(f"the bucket of {where} does not exist: create it") from None
        if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            raise DataStoreError(
                f"the S3 credentials were refused by {where} ({code}): {set_keys}"
            ) from None
        raise DataStoreError(f"{where}: {err}") from None
    except BotoCoreError as err:
        raise DataStoreError(f"{where}: {err}") from None


def transfer(
    direction: str,
    targets: Sequence[str] = (),
    *,
    remote: str | None = None,
    root: Path | None = None,
) -> None:
    """``dvc push`` or ``dvc pull`` of ``targets`` (default: everything tracked), after
    the remote has been checked."""
    if direction not in ("push", "pull"):
        raise ValueError(f"direction must be push or pull, not {direction!r}")
    root = project_root(root)
    name, settings = remote_settings(root, remote)
    check_s3_remote(name, settings)
    run_dvc([direction, "--remote", name, *targets], root)
