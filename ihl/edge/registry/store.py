"""Model registry on S3, in the layout KServe's storage initializer downloads as is.

One version of a model is an export folder (see ``ihl.edge.export``) under
``s3://BUCKET/PREFIX/<name>/<version>/``::

    model-store/<name>.mar
    config/config.properties
    model_card.md
    manifest.json            sha256 and size of every file above; written last

A version is complete once its manifest exists, and is never written again: a
push first claims the version with a conditional write (``If-None-Match: *``)
of ``.push-claim.json``, so of two concurrent pushes one fails before it has
uploaded anything, and the manifest, also written conditionally, is the
commit point. A push killed before its manifest leaves an incomplete version
that ``abandon`` removes once its claim is old enough. Pulls download to a
temporary folder next to the destination, check every file against the
manifest and only then rename it into place.
Aliases (``production``, ``staging``) are small objects under
``<name>/_aliases/`` that name a version; versions cannot start with ``_``.

The S3 endpoint and credentials come from boto3's usual configuration
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, profiles),
or ``endpoint_url``. boto3 is imported lazily: the core package never needs it.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
import re
import secrets
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from ihl.edge.names import check_name
from ihl.edge.urls import redact
from ihl.files import replacing_folder

MANIFEST = "manifest.json"
CLAIM = ".push-claim.json"
ALIASES = "_aliases"
REQUIRED = ("config/config.properties", "model_card.md")
"""Files every export holds besides its archive (``model-store/*.mar``)."""


class RegistryError(Exception):
    """A registry operation failed; the message says why and what to do. URLs in it are
    redacted (``ihl.edge.urls.redact``): an endpoint or a botocore message may carry
    credentials."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class VersionExistsError(RegistryError):
    """The version is already in the registry; versions are immutable."""


class ChecksumError(RegistryError):
    """A downloaded file differs from the manifest written at push time."""


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise RegistryError(f"registry URI {uri!r}: expected s3://BUCKET[/PREFIX]")
    return parsed.netloc, parsed.path.strip("/")


def _check_name(value: str, what: str) -> str:
    return check_name(value, what, RegistryError)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _who() -> str:
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _natural_key(version: str) -> tuple:
    """Sort "2" before "10" and "1.2" before "1.10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


MISSING = ("404", "NoSuchKey")
PRECONDITION_FAILED = ("412", "PreconditionFailed", "ConditionalRequestConflict")
REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403")


def _error_code(err: BaseException | None) -> str | None:
    """The S3 error code of a botocore ClientError, also one that boto3's transfer manager
    wrapped (its S3UploadFailedError keeps the ClientError as its context); else None."""
    from botocore.exceptions import ClientError

    while err is not None:
        if isinstance(err, ClientError):
            return err.response.get("Error", {}).get("Code", "")
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def _s3_errors(where: str) -> Iterator[None]:
    """Turn botocore's exceptions into RegistryErrors that say what to do. The botocore
    exception is not chained: its text may name the endpoint with credentials in it."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise RegistryError(
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE with ~/.aws/credentials)"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError) as err:
        raise RegistryError(
            f"cannot reach the S3 endpoint for {where} ({err}): check --endpoint-url or "
            "AWS_ENDPOINT_URL and that the server is running"
        ) from None
    except ClientError as err:
        code = _error_code(err)
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        if code == "NoSuchBucket":
            raise RegistryError(f"{where}: the bucket does not exist; create it first") from None
        if code in REFUSED:
            raise RegistryError(
                f"{where}: S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from None
        raise RegistryError(f"{where}: S3 error {code}: {message}") from None
    except BotoCoreError as err:
        raise RegistryError(f"{where}: {err}") from None


@functools.cache
def _boto_loader():
    import botocore.loaders

    return botocore.loaders.create_loader()


class _Store:
    """One registry URI on one S3 endpoint; checks the bucket once up front."""

    def __init__(self, uri: str, endpoint_url: str | None = None):
        import boto3
        import botocore.session
        from botocore.config import Config

        self.bucket, self.prefix = parse_uri(uri)
        self.uri = uri.rstrip("/")
        config = Config(connect_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
        # A fresh session reads credentials and endpoint anew (boto3's default one caches
        # them); the shared loader spares it parsing botocore's service models again.
        core = botocore.session.Session()
        core.register_component("data_loader", _boto_loader())
        try:
            session = boto3.session.Session(botocore_session=core)
            self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        except ValueError as err:
            raise RegistryError(f"S3 endpoint {endpoint_url!r}: {err}") from None
        with _s3_errors(f"registry {self.uri}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as err:
                if _error_code(err) in MISSING:
                    raise RegistryError(
                        f"registry {self.uri}: bucket {self.bucket!r} does not exist at "
                        f"{self.client.meta.endpoint_url}; create it or fix the URI"
                    ) from None
                raise

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get_bytes(self, key: str) -> tuple[bytes, str] | None:
        """The object at ``key`` and its ETag, or None if there is none."""
        with _s3_errors(self.url(key)):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as err:
                if _error_code(err) in MISSING:
                    return None
                raise
            return response["Body"].read(), response["ETag"]

    def get_json(self, key: str) -> tuple[dict, str] | None:
        """The JSON object at ``key`` and its ETag, or None if there is none."""
        found = self.get_bytes(key)
        return None if found is None else (self.parse_json(key, found[0]), found[1])

    def parse_json(self, key: str, data: bytes) -> dict:
        try:
            return json.loads(data)
        except ValueError as err:
            raise RegistryError(f"{self.url(key)} is not valid JSON: {err}") from None

    def put_json(self, key: str, value: dict, **conditions: str) -> None:
        """Write ``value``; ``conditions`` are IfNoneMatch="*" or IfMatch=ETAG."""
        body = (json.dumps(value, indent=2) + "\n").encode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            **conditions,
        )

    def subfolders(self, key: str) -> list[str]:
        """Names of the "folders" directly under ``key``."""
        names = []
        with _s3_errors(self.url(key)):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{key}/" if key else "", Delimiter="/"
            )
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    names.append(entry["Prefix"].rstrip("/").rsplit("/", 1)[-1])
        return names

    def keys(self, key: str) -> list[str]:
        found = []
        with _s3_errors(self.url(key)):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{key}/"
            )
            for page in pages:
                found += [entry["Key"] for entry in page.get("Contents", [])]
        return found

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys``; S3 answers a batch delete with per-key errors, raised here."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RegistryError(
                    f"{self.url(first['Key'])}: S3 refused to delete it ({first.get('Code')}: "
                    f"{first.get('Message')}); {len(answer['Errors'])} of {len(batch)} refused"
                )

    def manifest(self, name: str, version: str) -> dict | None:
        found = self.get_json(self.key(name, version, MANIFEST))
        return found[0] if found else None

    def manifest_bytes(self, name: str, version: str) -> bytes:
        """The manifest object as stored: what KServe downloads and the serve image checks."""
        found = self.get_bytes(self.key(name, version, MANIFEST))
        if found is None:
            raise RegistryError(f"{self.url(self.key(name, version, MANIFEST))} is missing")
        return found[0]

    def alias(self, name: str, alias: str) -> tuple[dict, str] | None:
        return self.get_json(self.key(name, ALIASES, f"{alias}.json"))

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of ``name`` and the version it names."""
        found = {}
        for key in self.keys(self.key(name, ALIASES)):
            record = self.get_json(key)
            if record:
                found[key.rsplit("/", 1)[-1].removesuffix(".json")] = record[0].get("version")
        return found

    def resolve(self, name: str, version_or_alias: str) -> tuple[str, dict]:
        """The version (and its manifest) that ``version_or_alias`` names."""
        _check_name(name, "model name")
        _check_name(version_or_alias, "version or alias")
        manifest = self.manifest(name, version_or_alias)
        if manifest is not None:
            return version_or_alias, manifest
        alias = self.alias(name, version_or_alias)
        if alias is not None:
            version = alias[0]["version"]
            manifest = self.manifest(name, version)
            if manifest is None:
                raise RegistryError(
                    f"alias {version_or_alias!r} of model {name!r} points to version {version!r}, "
                    f"which has no manifest in {self.uri}"
                )
            return version, manifest
        if self.keys(self.key(name, version_or_alias)):
            raise RegistryError(
                f"version {version_or_alias!r} of model {name!r} in {self.uri} is incomplete "
                "(an interrupted or running push): it has no manifest; `ihl registry abandon` "
                "removes an interrupted one"
            )
        versions = [v for v in self.subfolders(self.key(name)) if v != ALIASES]
        if not versions:
            raise RegistryError(
                f"no model {name!r} in {self.uri}; `ihl registry list {self.uri}` shows the models"
            )
        aliases = self.aliases(name)
        raise RegistryError(
            f"no version or alias {version_or_alias!r} of model {name!r} in {self.uri} "
            f"(versions: {', '.join(sorted(versions, key=_natural_key))}; "
            f"aliases: {', '.join(sorted(aliases)) or 'none'})"
        )


def _export_files(export_dir: Path) -> dict[str, Path]:
    """The export's own files by relative POSIX path: one ``model-store/*.mar`` and
    ``REQUIRED``. Anything else in the folder (a ``.env``, a ``key_file.json``, logs) and
    any symlink, which could point anywhere, is refused by name: a push never uploads more
    than the export."""
    if not export_dir.is_dir():
        raise RegistryError(f"export folder not found: {export_dir}")
    files: dict[str, Path] = {}
    refused = []
    for root, dirs, names in os.walk(export_dir):  # does not follow symlinks
        for entry in sorted(dirs + names):
            path = Path(root) / entry
            rel = path.relative_to(export_dir).as_posix()
            if path.is_symlink():
                refused.append(f"{rel} (a symlink)")
            elif path.is_dir():
                continue
            elif not path.is_file():
                refused.append(f"{rel} (not a regular file)")
            elif rel in REQUIRED or re.fullmatch(r"model-store/[^/]+\.mar", rel):
                files[rel] = path
            else:
                refused.append(rel)
    archives = [p for p in files if p.startswith("model-store/")]
    if len(archives) > 1:
        refused += archives
    if refused:
        raise RegistryError(
            f"{export_dir} holds what is not part of an export: {', '.join(refused)}. A push "
            "uploads exactly model-store/<name>.mar, config/config.properties and "
            "model_card.md; move the rest out of the folder"
        )
    missing = [p for p in REQUIRED if p not in files]
    if not archives:
        missing.insert(0, "model-store/*.mar")
    if missing:
        raise RegistryError(
            f"{export_dir} is not an export folder: missing {', '.join(missing)} "
            "(make one with `ihl export CHECKPOINT --out DIR`)"
        )
    return dict(sorted(files.items()))


Progress = Callable[[str, int], Callable[[int], None]]
"""``progress(label, total_bytes)`` returns a callback that takes bytes done since the last call."""


def no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


class _Abandoned(RegistryError):
    """The push's claim is gone or another's: it was abandoned while it uploaded."""


def push(
    export_dir: Path,
    uri: str,
    name: str,
    version: str,
    *,
    endpoint_url: str | None = None,
    progress: Progress = no_progress,
) -> str:
    """Upload an export folder as ``<uri>/<name>/<version>/`` and return that URI.

    Refuses a version that exists (complete, or claimed by another push) or that
    shares its name with an alias. On an error after the claim, what was
    uploaded is removed so that the version can be pushed again.
    """
    _check_name(name, "model name")
    _check_name(version, "version")
    files = _export_files(Path(export_dir))
    entries = {
        rel: {"sha256": file_sha256(path), "size": path.stat().st_size}
        for rel, path in files.items()
    }
    store = _Store(uri, endpoint_url)
    version_uri = store.url(store.key(name, version))
    claim = _claim(store, name, version)
    uploaded = [store.key(name, version, CLAIM)]
    try:
        # Checked again now that the claim stands: a promote that raced this push sees the
        # claim and refuses (promote checks after its write too), or this check sees its alias.
        _refuse_alias_name(store, name, version)
        with _s3_errors(version_uri):
            existing = _upload(store, name, version, files, entries, progress, uploaded)
            _commit(store, name, version, claim, entries, existing)
    except _Abandoned:
        raise  # the files are no longer this push's to delete
    except BaseException:
        if not _cleanup(store, name, version, claim["push_id"], uploaded):
            raise
    return version_uri


def _claim(store: _Store, name: str, version: str) -> dict:
    """Claim ``version`` for this push (a conditional write of its claim); returns the claim."""
    version_uri = store.url(store.key(name, version))
    if store.manifest(name, version) is not None:
        raise VersionExistsError(
            f"{version_uri} already exists; versions are immutable: push under a new version"
        )
    _refuse_alias_name(store, name, version)
    claim = {"pushed_by": _who(), "started": _now(), "push_id": secrets.token_hex(8)}
    with _s3_errors(version_uri):
        try:
            store.put_json(store.key(name, version, CLAIM), claim, IfNoneMatch="*")
        except Exception as err:
            if _error_code(err) not in PRECONDITION_FAILED:
                raise
            if store.manifest(name, version) is not None:
                raise VersionExistsError(
                    f"{version_uri} was pushed just now by someone else; versions are immutable"
                ) from None
            other = (store.get_json(store.key(name, version, CLAIM)) or ({},))[0]
            raise RegistryError(
                f"{version_uri} is being pushed by {other.get('pushed_by', 'another client')} "
                f"(since {other.get('started', '?')}); if that push was interrupted, "
                f"`ihl registry abandon {store.uri} {name} {version}` removes it"
            ) from None
    return claim


def _upload(
    store: _Store,
    name: str,
    version: str,
    files: dict[str, Path],
    entries: dict[str, dict],
    progress: Progress,
    uploaded: list[str],
) -> str | None:
    """Upload ``files``, each with ``If-None-Match: *``, appending each key to ``uploaded``;
    stops at a key that exists already (written by another push) and returns it."""
    with _no_overwrite(store.client):
        for rel, path in files.items():
            key = store.key(name, version, rel)
            try:
                store.client.upload_file(
                    str(path),
                    store.bucket,
                    key,
                    Callback=progress(rel, entries[rel]["size"]),
                    Config=_one_part(),
                )
            except Exception as err:
                if _error_code(err) in PRECONDITION_FAILED:
                    return key
                raise
            uploaded.append(key)
    return None


def _commit(
    store: _Store, name: str, version: str, claim: dict, entries: dict, existing: str | None
) -> None:
    """Write the manifest, if the claim is still this push's and every file was uploaded."""
    version_uri = store.url(store.key(name, version))
    current = store.get_json(store.key(name, version, CLAIM))
    if current is None or current[0] != claim:
        raise _Abandoned(
            f"{version_uri}: the push was abandoned (`ihl registry abandon`) while it "
            "uploaded; nothing was committed. Files it uploaded since are left for "
            "`ihl registry abandon` (the version may be another push's by now)"
        )
    if existing is not None:
        raise RegistryError(
            f"{store.url(existing)} exists already, though this push holds the claim: "
            "nothing was overwritten or committed"
        )
    manifest = {
        "name": name,
        "version": version,
        "pushed_at": _now(),
        "pushed_by": claim["pushed_by"],
        "push_id": claim["push_id"],
        "files": entries,
    }
    store.put_json(store.key(name, version, MANIFEST), manifest, IfNoneMatch="*")


SINGLE_PUT_LIMIT = 5 * 1024**3
"""S3's largest single PutObject: uploads stay one request, which can carry If-None-Match."""


def _one_part():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=SINGLE_PUT_LIMIT)


@contextmanager
def _no_overwrite(client) -> Iterator[None]:
    """Every PutObject in the block carries ``If-None-Match: *``: an upload never replaces an
    object, and the deny-overwrite policy of ``protect`` admits it (boto3's upload_file takes
    no such argument, so the header is added as the request is signed)."""

    def add_header(request, **kwargs):
        request.headers["If-None-Match"] = "*"

    client.meta.events.register("before-sign.s3.PutObject", add_header)
    try:
        yield
    finally:
        client.meta.events.unregister("before-sign.s3.PutObject", add_header)


POLICY_ACTIONS = (
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutReplicationConfiguration",
)
"""Bucket settings that could lift the protection or delete objects without DeleteObject
(a lifecycle rule that expires them); ``protect`` denies changing them to every key."""


def protection_policy(bucket: str, prefix: str) -> dict:
    """A bucket policy under which no object of the registry can be replaced or deleted, by
    any key: every PutObject must carry If-None-Match (as every registry write does), and
    nothing may be deleted; alias objects, which promote rewrites with If-Match, excepted.
    Nor may any key change the policy itself, lifecycle rules, versioning, object lock or
    replication (``POLICY_ACTIONS``): only the account's root user can lift it.
    For a bucket that holds only the registry: the statements cover the whole bucket."""
    aliases = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*/{ALIASES}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "IhlRegistryNoOverwrite",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "NotResource": aliases,
                "Condition": {"Null": {"s3:if-none-match": "true"}},
            },
            {
                "Sid": "IhlRegistryNoDelete",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "NotResource": aliases,
            },
            {
                "Sid": "IhlRegistryKeepPolicy",
                "Effect": "Deny",
                "Principal": "*",
                "Action": list(POLICY_ACTIONS),
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }


def protect(uri: str, *, endpoint_url: str | None = None) -> dict:
    """Put ``protection_policy`` on the registry's bucket (statements of other Sids kept);
    returns the policy now in force. Afterwards ``abandon`` and a failed push's cleanup are
    refused too: an interrupted push's files stay, and its version number is used up. Once in
    force, the policy denies its own replacement: protecting again leaves it as it is."""
    store = _Store(uri, endpoint_url)
    ours = protection_policy(store.bucket, store.prefix)
    sids = {statement["Sid"] for statement in ours["Statement"]}
    with _s3_errors(f"bucket policy of s3://{store.bucket}"):
        try:
            current = json.loads(store.client.get_bucket_policy(Bucket=store.bucket)["Policy"])
        except Exception as err:
            if _error_code(err) != "NoSuchBucketPolicy":
                raise
            current = {"Statement": []}
        kept = [st for st in current.get("Statement", []) if st.get("Sid") not in sids]
        if current.get("Statement", []) == kept + ours["Statement"]:
            return current
        policy = ours | {"Statement": kept + ours["Statement"]}
        store.client.put_bucket_policy(Bucket=store.bucket, Policy=json.dumps(policy))
    return policy


def _refuse_alias_name(store: _Store, name: str, version: str) -> None:
    if store.alias(name, version) is not None:
        raise RegistryError(f"{name!r} already has an alias {version!r}; pick another version")


def _cleanup(store: _Store, name: str, version: str, push_id: str, uploaded: list[str]) -> bool:
    """After a failed push: whether it committed after all (its manifest write succeeded but
    the answer was lost, and a retry met 412). Only a version that no push committed and
    whose claim is still this push's is deleted; a committed version is never touched."""
    with suppress(Exception):  # best effort: a leftover claim names the failed push
        manifest = store.manifest(name, version)
        if manifest is not None:
            return manifest.get("push_id") == push_id
        claim = store.get_json(store.key(name, version, CLAIM))
        if claim is not None and claim[0].get("push_id") == push_id:
            store.delete(uploaded)
    return False


def abandon(
    uri: str,
    name: str,
    version: str,
    *,
    older_than_minutes: float = 60.0,
    endpoint_url: str | None = None,
) -> list[str]:
    """Remove an incomplete version (a push that never wrote its manifest); returns the keys
    deleted.

    Complete versions are immutable and refused. So is a version whose push claim is younger
    than ``older_than_minutes``: that push may still be uploading (a running push that finds
    its claim gone stops before it commits). The claim is deleted first and the manifest read
    again before anything else is: a push that commits meanwhile keeps its version (and its
    claim, written back).
    """
    _check_name(name, "model name")
    _check_name(version, "version")
    store = _Store(uri, endpoint_url)
    folder = store.key(name, version)
    version_uri = store.url(folder)
    if store.manifest(name, version) is not None:
        raise RegistryError(f"{version_uri} is complete; versions are immutable and never removed")
    found = store.keys(folder)
    if not found:
        raise RegistryError(f"{version_uri} does not exist; nothing to abandon")
    claim_key = store.key(name, version, CLAIM)
    claim = store.get_json(claim_key)
    if claim is not None:
        _refuse_running_push(version_uri, claim[0], older_than_minutes)
    with _s3_errors(version_uri):
        if claim is not None:
            store.delete([claim_key])
        if store.manifest(name, version) is not None:
            if claim is not None:
                store.put_json(claim_key, claim[0], IfNoneMatch="*")
            raise RegistryError(
                f"{version_uri} was committed by its push meanwhile; it is complete and was "
                "left as it is"
            )
        store.delete([key for key in found if key != claim_key])
    return found


def _refuse_running_push(version_uri: str, claim: dict, older_than_minutes: float) -> None:
    """Refuse to abandon a push whose claim is younger than ``older_than_minutes``."""
    started = claim.get("started", "")
    try:
        minutes = (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds() / 60
    except (TypeError, ValueError):
        minutes = None
    if minutes is None and older_than_minutes > 0:
        raise RegistryError(
            f"{version_uri}: its push claim has no readable start time ({started!r}); "
            "if no push is running, abandon it with `--older-than 0`"
        )
    if minutes is not None and minutes < older_than_minutes:
        raise RegistryError(
            f"{version_uri} is being pushed by {claim.get('pushed_by', 'another client')} "
            f"since {started} ({minutes:.0f} min ago): it may still be "
            f"running; wait, or lower `--older-than` (now {older_than_minutes:g} min)"
        )


def list_models(uri: str, *, endpoint_url: str | None = None) -> list[str]:
    """Model names in the registry."""
    store = _Store(uri, endpoint_url)
    return sorted(store.subfolders(store.prefix))


def list_versions(uri: str, name: str, *, endpoint_url: str | None = None) -> list[dict]:
    """Every version of ``name``, oldest first by version number, with its aliases.

    Each entry: version, uri, complete (False for an unfinished push), pushed_at,
    pushed_by, size (bytes), files, aliases, manifest_sha256 (what ``pull`` and ``register``
    can pin). An unknown model gives an empty list.
    """
    _check_name(name, "model name")
    store = _Store(uri, endpoint_url)
    aliases: dict[str, list[str]] = {}
    for alias, version in store.aliases(name).items():
        aliases.setdefault(version, []).append(alias)
    versions = []
    for version in store.subfolders(store.key(name)):
        if version == ALIASES:
            continue
        key = store.key(name, version, MANIFEST)
        stored = store.get_bytes(key)
        manifest = store.parse_json(key, stored[0]) if stored else {}
        files = manifest.get("files", {})
        versions.append(
            {
                "version": version,
                "uri": store.url(store.key(name, version)),
                "complete": bool(manifest),
                "pushed_at": manifest.get("pushed_at"),
                "pushed_by": manifest.get("pushed_by"),
                "size": sum(f["size"] for f in files.values()),
                "files": len(files),
                "aliases": sorted(aliases.get(version, [])),
                "manifest_sha256": manifest_digest(stored[0]) if stored else None,
            }
        )
    return sorted(versions, key=lambda v: _natural_key(v["version"]))


def resolve(uri: str, name: str, version_or_alias: str, *, endpoint_url: str | None = None) -> str:
    """The complete version that ``version_or_alias`` names (an alias is followed)."""
    return _Store(uri, endpoint_url).resolve(name, version_or_alias)[0]


def manifest_digest(manifest_bytes: bytes) -> str:
    """The sha256 that pins a version: of its manifest as stored."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def pinned_version(
    uri: str, name: str, version_or_alias: str, *, endpoint_url: str | None = None
) -> tuple[str, str]:
    """(s3:// folder, sha256 of its manifest as stored) of the complete version that
    ``version_or_alias`` names: what an InferenceService pins (serving/verify_models.py).

    The folder ends in ``/``: KServe's storage initializer downloads every object whose key
    starts with its ``storageUri``, so ``.../ihl/1`` would bring ``10``, ``1.x`` and ``1-rc``
    along, and the serve image would refuse their files."""
    store = _Store(uri, endpoint_url)
    version, _ = store.resolve(name, version_or_alias)
    digest = manifest_digest(store.manifest_bytes(name, version))
    return store.url(store.key(name, version)) + "/", digest


def _safe_relpath(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise RegistryError(f"manifest lists an unsafe path {rel!r}; refusing to download it")
    return path


def pull(
    uri: str,
    name: str,
    version_or_alias: str,
    dest: Path,
    *,
    manifest_sha256: str | None = None,
    endpoint_url: str | None = None,
    progress: Progress = no_progress,
) -> Path:
    """Download a version (or the version an alias names) into ``dest`` and return ``dest``.

    ``dest`` must not exist (or be an empty folder). Every file is checked against
    the manifest's sha256 and size before ``dest`` appears; on any failure nothing
    is left behind. ``manifest_sha256`` pins the version, as an InferenceService does:
    a manifest with another sha256 (a version rewritten since it was pinned, archive
    and manifest alike) is refused.
    """
    download(_Store(uri, endpoint_url), name, version_or_alias, Path(dest),
             manifest_sha256=manifest_sha256, progress=progress)  # fmt: skip
    return Path(dest)


def download(
    store: _Store,
    name: str,
    version_or_alias: str,
    dest: Path,
    *,
    manifest_sha256: str | None = None,
    progress: Progress = no_progress,
) -> str:
    """``pull`` from an open store; returns the version downloaded."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise FileExistsError(f"destination exists and is not an empty folder: {dest}")
    version, manifest = store.resolve(name, version_or_alias)
    manifest_url = store.url(store.key(name, version, MANIFEST))
    manifest_bytes = store.manifest_bytes(name, version)
    digest = manifest_digest(manifest_bytes)
    if manifest_sha256 is not None and digest != manifest_sha256.lower():
        raise ChecksumError(
            f"{manifest_url} has sha256 {digest}, not the pinned {manifest_sha256}: the "
            f"version was rewritten since it was pinned; nothing was written to {dest}"
        )
    if json.loads(manifest_bytes) != manifest:
        raise RegistryError(f"{manifest_url} changed while read")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RegistryError(f"{manifest_url} lists no files")
    with replacing_folder(dest) as partial:
        for rel, expected in files.items():
            target = partial / _safe_relpath(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            callback = progress(rel, expected["size"])
            _download_file(store, store.key(name, version, rel), target, expected, callback, dest)
        (partial / MANIFEST).write_bytes(manifest_bytes)  # as stored: its sha256 is pinned
    return version


def _download_file(
    store: _Store, key: str, target: Path, expected: dict, callback: Callable, dest: Path
) -> None:
    """Download ``key`` to ``target``; a ChecksumError unless it matches ``expected``."""
    with _s3_errors(store.url(key)):
        try:
            store.client.download_file(store.bucket, key, str(target), Callback=callback)
        except Exception as err:
            if _error_code(err) in MISSING:
                raise RegistryError(
                    f"{store.url(key)} is listed in the manifest but missing"
                ) from None
            raise
    size, digest = target.stat().st_size, file_sha256(target)
    if size != expected["size"] or digest != expected["sha256"]:
        raise ChecksumError(
            f"{store.url(key)} does not match the manifest written at push time "
            f"(sha256 {digest[:12]}..., {size} bytes; expected "
            f"{expected['sha256'][:12]}..., {expected['size']} bytes): the object was "
            f"changed or corrupted; nothing was written to {dest}"
        )


def promote(
    uri: str,
    name: str,
    version: str,
    alias: str = "production",
    *,
    endpoint_url: str | None = None,
) -> str | None:
    """Point ``alias`` at ``version`` (itself a version or an alias); returns the previous version.

    The alias is rewritten only if nobody moved it since it was read (``If-Match``).
    """
    _check_name(alias, "alias")
    store = _Store(uri, endpoint_url)
    target, _ = store.resolve(name, version)
    _refuse_version_name(store, name, alias)
    current = store.alias(name, alias)
    previous = current[0].get("version") if current else None
    record = {"version": target, "previous": previous, "promoted_at": _now(), "by": _who()}
    key = store.key(name, ALIASES, f"{alias}.json")
    condition = {"IfMatch": current[1]} if current else {"IfNoneMatch": "*"}
    with _s3_errors(store.url(key)):
        try:
            store.put_json(key, record, **condition)
        except Exception as err:
            if _error_code(err) in PRECONDITION_FAILED:
                raise RegistryError(
                    f"alias {alias!r} of {name!r} was moved by someone else meanwhile; "
                    "check `ihl registry list` and promote again"
                ) from err
            raise
        try:  # a push that claimed this name meanwhile: undo the write, the push goes on
            _refuse_version_name(store, name, alias)
        except RegistryError:
            written = store.get_json(key)
            if written is not None and written[0] == record:
                if current is None:
                    store.delete([key])
                else:
                    store.put_json(key, current[0], IfMatch=written[1])
            raise
    return previous


def _refuse_version_name(store: _Store, name: str, alias: str) -> None:
    """An alias may not take the name of a version, complete or being pushed."""
    if store.keys(store.key(name, alias)):
        raise RegistryError(
            f"{alias!r} is a version of {name!r} (complete, or being pushed); an alias needs "
            "another name"
        )
