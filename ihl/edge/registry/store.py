"""Model registry on S3, in the layout KServe's storage initializer downloads as is.

One version of a model is an export folder (see ``ihl.export``) under
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
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
CLAIM = ".push-claim.json"
ALIASES = "_aliases"
REQUIRED = ("config/config.properties", "model_card.md")
"""Files every export holds besides its archive (``model-store/*.mar``)."""

KSERVE_ENV = {
    "TS_INFERENCE_ADDRESS": "http://0.0.0.0:8080",
    "TS_MANAGEMENT_ADDRESS": "http://127.0.0.1:8081",
    "TS_METRICS_ADDRESS": "http://0.0.0.0:8082",
    "TS_SERVICE_ENVELOPE": "kserve",
}
"""TorchServe settings an InferenceService pins through the environment (see inference_service)."""

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Model names, versions and aliases: safe as S3 keys, file names and TorchServe model names."""


class RegistryError(Exception):
    """A registry operation failed; the message says why and what to do."""


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
    if not NAME.fullmatch(value):
        raise RegistryError(
            f"{what} {value!r}: use letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (at most 100 characters)"
        )
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _who() -> str:
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _natural_key(version: str) -> tuple:
    """Sort "2" before "10" and "1.2" before "1.10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


@contextmanager
def _s3_errors(where: str) -> Iterator[None]:
    """Turn botocore's exceptions into RegistryErrors that say what to do."""
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
    except (NoCredentialsError, PartialCredentialsError) as err:
        raise RegistryError(
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE with ~/.aws/credentials)"
        ) from err
    except (EndpointConnectionError, ConnectTimeoutError) as err:
        raise RegistryError(
            f"cannot reach the S3 endpoint for {where} ({err}): check --endpoint-url or "
            "AWS_ENDPOINT_URL and that the server is running"
        ) from err
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        if code in ("NoSuchBucket",):
            raise RegistryError(f"{where}: the bucket does not exist; create it first") from err
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            raise RegistryError(
                f"{where}: S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from err
        raise RegistryError(f"{where}: S3 error {code}: {message}") from err
    except BotoCoreError as err:
        raise RegistryError(f"{where}: {err}") from err


def _is_missing(err: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") in (
        "404",
        "NoSuchKey",
    )


def _is_precondition_failed(err: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") in (
        "412",
        "PreconditionFailed",
        "ConditionalRequestConflict",
    )


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
            raise RegistryError(f"S3 endpoint {endpoint_url!r}: {err}") from err
        with _s3_errors(f"registry {self.uri}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as err:
                if _is_missing(err):
                    raise RegistryError(
                        f"registry {self.uri}: bucket {self.bucket!r} does not exist at "
                        f"{self.client.meta.endpoint_url}; create it or fix the URI"
                    ) from err
                raise

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get_json(self, key: str) -> tuple[dict, str] | None:
        """The JSON object at ``key`` and its ETag, or None if there is none."""
        with _s3_errors(self.url(key)):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as err:
                if _is_missing(err):
                    return None
                raise
            body = response["Body"].read()
        try:
            return json.loads(body), response["ETag"]
        except ValueError as err:
            raise RegistryError(f"{self.url(key)} is not valid JSON: {err}") from err

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
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def manifest(self, name: str, version: str) -> dict | None:
        found = self.get_json(self.key(name, version, MANIFEST))
        return found[0] if found else None

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
    """The files of an export folder by relative POSIX path; refuses an incomplete layout."""
    if not export_dir.is_dir():
        raise RegistryError(f"export folder not found: {export_dir}")
    files = {
        path.relative_to(export_dir).as_posix(): path
        for path in sorted(export_dir.rglob("*"))
        if path.is_file()
    }
    archives = [p for p in files if PurePosixPath(p).parent.as_posix() == "model-store"]
    archives = [p for p in archives if p.endswith(".mar")]
    missing = [p for p in REQUIRED if p not in files]
    if not archives:
        missing.insert(0, "model-store/*.mar")
    if missing:
        raise RegistryError(
            f"{export_dir} is not an export folder: missing {', '.join(missing)} "
            "(make one with `ihl export CHECKPOINT --out DIR`)"
        )
    reserved = [p for p in (MANIFEST, CLAIM) if p in files]
    if reserved:
        raise RegistryError(f"{export_dir}: {', '.join(reserved)} is reserved for the registry")
    return files


Progress = Callable[[str, int], Callable[[int], None]]
"""``progress(label, total_bytes)`` returns a callback that takes bytes done since the last call."""


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def push(
    export_dir: Path,
    uri: str,
    name: str,
    version: str,
    *,
    endpoint_url: str | None = None,
    progress: Progress = _no_progress,
) -> str:
    """Upload an export folder as ``<uri>/<name>/<version>/`` and return that URI.

    Refuses a version that exists (complete, or claimed by another push) or that
    shares its name with an alias. On an error after the claim, what was
    uploaded is removed so that the version can be pushed again.
    """
    _check_name(name, "model name")
    _check_name(version, "version")
    export_dir = Path(export_dir)
    files = _export_files(export_dir)
    entries = {
        rel: {"sha256": _sha256(path), "size": path.stat().st_size} for rel, path in files.items()
    }
    store = _Store(uri, endpoint_url)
    folder = store.key(name, version)
    version_uri = store.url(folder)
    if store.manifest(name, version) is not None:
        raise VersionExistsError(
            f"{version_uri} already exists; versions are immutable: push under a new version"
        )
    if store.alias(name, version) is not None:
        raise RegistryError(f"{name!r} already has an alias {version!r}; pick another version")
    claim = {"pushed_by": _who(), "started": _now(), "push_id": secrets.token_hex(8)}
    with _s3_errors(version_uri):
        try:
            store.put_json(store.key(name, version, CLAIM), claim, IfNoneMatch="*")
        except Exception as err:
            if not _is_precondition_failed(err):
                raise
            if store.manifest(name, version) is not None:
                raise VersionExistsError(
                    f"{version_uri} was pushed just now by someone else; versions are immutable"
                ) from err
            other = (store.get_json(store.key(name, version, CLAIM)) or ({},))[0]
            raise RegistryError(
                f"{version_uri} is being pushed by {other.get('pushed_by', 'another client')} "
                f"(since {other.get('started', '?')}); if that push was interrupted, "
                f"`ihl registry abandon {uri} {name} {version}` removes it"
            ) from err
    uploaded = [store.key(name, version, CLAIM)]
    abandoned = False
    try:
        with _s3_errors(version_uri):
            for rel, path in files.items():
                key = store.key(name, version, rel)
                store.client.upload_file(
                    str(path), store.bucket, key, Callback=progress(rel, entries[rel]["size"])
                )
                uploaded.append(key)
            current = store.get_json(store.key(name, version, CLAIM))
            if current is None or current[0] != claim:
                abandoned = True
                raise RegistryError(
                    f"{version_uri}: the push was abandoned (`ihl registry abandon`) while it "
                    "uploaded; nothing was committed. Files it uploaded since are left for "
                    "`ihl registry abandon` (the version may be another push's by now)"
                )
            manifest = {
                "name": name,
                "version": version,
                "pushed_at": _now(),
                "pushed_by": claim["pushed_by"],
                "files": entries,
            }
            store.put_json(store.key(name, version, MANIFEST), manifest, IfNoneMatch="*")
    except BaseException:
        if not abandoned:
            with suppress(Exception):  # best effort: a leftover claim names the failed push
                store.delete(uploaded)
        raise
    return version_uri


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
    its claim gone stops before it commits).
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
    claim = store.get_json(store.key(name, version, CLAIM))
    if claim is not None:
        started = claim[0].get("started", "")
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
                f"{version_uri} is being pushed by {claim[0].get('pushed_by', 'another client')} "
                f"since {started} ({minutes:.0f} min ago): it may still be "
                f"running; wait, or lower `--older-than` (now {older_than_minutes:g} min)"
            )
    with _s3_errors(version_uri):
        store.delete(found)
    return found


def list_models(uri: str, *, endpoint_url: str | None = None) -> list[str]:
    """Model names in the registry."""
    store = _Store(uri, endpoint_url)
    return sorted(store.subfolders(store.prefix))


def list_versions(uri: str, name: str, *, endpoint_url: str | None = None) -> list[dict]:
    """Every version of ``name``, oldest first by version number, with its aliases.

    Each entry: version, uri, complete (False for an unfinished push), pushed_at,
    pushed_by, size (bytes), files, aliases. An unknown model gives an empty list.
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
        manifest = store.manifest(name, version) or {}
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
            }
        )
    return sorted(versions, key=lambda v: _natural_key(v["version"]))


def resolve(uri: str, name: str, version_or_alias: str, *, endpoint_url: str | None = None) -> str:
    """The complete version that ``version_or_alias`` names (an alias is followed)."""
    return _Store(uri, endpoint_url).resolve(name, version_or_alias)[0]


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
    endpoint_url: str | None = None,
    progress: Progress = _no_progress,
) -> Path:
    """Download a version (or the version an alias names) into ``dest`` and return ``dest``.

    ``dest`` must not exist (or be an empty folder). Every file is checked against
    the manifest's sha256 and size before ``dest`` appears; on any failure nothing
    is left behind.
    """
    dest = Path(dest)
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise FileExistsError(f"destination exists and is not an empty folder: {dest}")
    store = _Store(uri, endpoint_url)
    version, manifest = store.resolve(name, version_or_alias)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RegistryError(f"{store.url(store.key(name, version, MANIFEST))} lists no files")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for rel, expected in files.items():
            target = partial / _safe_relpath(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            key = store.key(name, version, rel)
            with _s3_errors(store.url(key)):
                try:
                    store.client.download_file(
                        store.bucket, key, str(target), Callback=progress(rel, expected["size"])
                    )
                except Exception as err:
                    if _is_missing(err):
                        raise RegistryError(
                            f"{store.url(key)} is listed in the manifest but missing"
                        ) from err
                    raise
            size, digest = target.stat().st_size, _sha256(target)
            if size != expected["size"] or digest != expected["sha256"]:
                raise ChecksumError(
                    f"{store.url(key)} does not match the manifest written at push time "
                    f"(sha256 {digest[:12]}..., {size} bytes; expected "
                    f"{expected['sha256'][:12]}..., {expected['size']} bytes): the object was "
                    f"changed or corrupted; nothing was written to {dest}"
                )
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest


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
    if store.manifest(name, alias) is not None:
        raise RegistryError(f"{alias!r} is a version of {name!r}; an alias needs another name")
    current = store.alias(name, alias)
    previous = current[0].get("version") if current else None
    record = {"version": target, "previous": previous, "promoted_at": _now(), "by": _who()}
    key = store.key(name, ALIASES, f"{alias}.json")
    condition = {"IfMatch": current[1]} if current else {"IfNoneMatch": "*"}
    with _s3_errors(store.url(key)):
        try:
            store.put_json(key, record, **condition)
        except Exception as err:
            if _is_precondition_failed(err):
                raise RegistryError(
                    f"alias {alias!r} of {name!r} was moved by someone else meanwhile; "
                    "check `ihl registry list` and promote again"
                ) from err
            raise
    return previous


def archive_identity(mar: Path) -> tuple[str, str]:
    """(model name, model version) recorded in a .mar's MAR-INF/MANIFEST.json."""
    try:
        with zipfile.ZipFile(mar) as archive:
            model = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        return model["modelName"], model["modelVersion"]
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise RegistryError(f"{mar} is not a TorchServe model archive: {err}") from err


def _management(method: str, url: str, token: str | None, timeout: float) -> dict:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        try:
            detail = json.loads(body).get("message", body)
        except ValueError:
            detail = body
        if "token" in str(detail).lower():  # TorchServe answers a bad key with HTTP 400
            hint = " (pass the management key: --token, or --key-file key_file.json)"
        else:
            hint = {
                405: " (start TorchServe with --enable-model-api or enable_model_api=true)",
                409: " (that model version is registered already)",
            }.get(err.code, "")
        raise RegistryError(f"TorchServe {method} {url}: HTTP {err.code}: {detail}{hint}") from err
    except (urllib.error.URLError, OSError) as err:
        raise RegistryError(
            f"cannot reach the TorchServe management API at {url}: {err}; is TorchServe running "
            "and is --management-url its management_address?"
        ) from err


def register(
    uri: str,
    name: str,
    version_or_alias: str,
    *,
    management_url: str,
    model_store: Path,
    token: str | None = None,
    workers: int = 1,
    set_default: bool = False,
    timeout: float = 300.0,
    endpoint_url: str | None = None,
    progress: Progress = _no_progress,
) -> dict:
    """Pull a version and register its archive with a running TorchServe.

    ``model_store`` is the server's model store: the verified archive is copied
    there as ``<name>-<version>.mar`` (atomically) and registered by that file
    name through the management API, so the server needs no S3 access and no
    ``allowed_urls`` change. The copy is removed again if registration fails.
    Returns the server's model name and version, the file and its reply.
    """
    model_store = Path(model_store)
    if not model_store.is_dir():
        raise FileNotFoundError(f"TorchServe model store not found: {model_store}")
    store = _Store(uri, endpoint_url)
    version, _ = store.resolve(name, version_or_alias)
    with tempfile.TemporaryDirectory(prefix="ihl-pull-") as tmp:
        pulled = pull(
            uri, name, version, Path(tmp) / "v", endpoint_url=endpoint_url, progress=progress
        )
        archives = sorted((pulled / "model-store").glob("*.mar"))
        if len(archives) != 1:
            raise RegistryError(f"{name} {version} holds {len(archives)} archives; expected one")
        model_name, model_version = archive_identity(archives[0])
        target = model_store / f"{name}-{version}.mar"
        created = not target.exists()
        if not created and _sha256(target) != _sha256(archives[0]):
            raise FileExistsError(
                f"{target} exists with other contents; remove it or use another model store"
            )
        if created:  # a hidden partial name first: the store never shows half an archive
            partial = model_store / f".{target.name}.partial"
            try:
                shutil.copyfile(archives[0], partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    query = urllib.parse.urlencode(
        {"url": target.name, "initial_workers": workers, "synchronous": "true"}
    )
    base = management_url.rstrip("/")
    try:
        reply = _management("POST", f"{base}/models?{query}", token, timeout)
    except BaseException:
        if created:
            target.unlink(missing_ok=True)
        raise
    if set_default:
        _management(
            "PUT", f"{base}/models/{model_name}/{model_version}/set-default", token, timeout
        )
    return {
        "model": model_name,
        "model_version": model_version,
        "version": version,
        "file": str(target.resolve()),
        "status": reply.get("status", ""),
    }


def inference_service(
    storage_uri: str,
    *,
    name: str = "ihl",
    gpus: int = 0,
    service_account: str = "ihl-s3",
    image: str | None = None,
) -> dict:
    """A KServe InferenceService for one registry version (``storage_uri``).

    KServe's ``pytorch`` model format with protocol v1: the storage initializer
    downloads the version to /mnt/models using the S3 credentials bound to
    ``service_account``; the serve image (``ihl.images.image("serve")``, which
    holds the handler's dependencies) runs TorchServe in the foreground, under
    the image's entrypoint, on that folder's model store and KServe
    config.properties. That config lets the environment override it
    (enable_envvars_config), which pins what KServe relies on whatever the
    image's defaults: inference on the pod port 8080 with the v1 envelope,
    management on the pod's loopback only, metrics on 8082 for Prometheus.
    ``gpus`` > 0 asks for that many ``nvidia.com/gpu`` and tolerates GPU taints.
    """
    from ihl.images import image as image_ref

    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?", name):
        raise RegistryError(
            f"InferenceService name {name!r}: use lowercase letters, digits and '-' "
            "(a DNS label of at most 45 characters, starting with a letter)"
        )
    limits = {"cpu": "4", "memory": "8Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    predictor: dict[str, Any] = {
        "serviceAccountName": service_account,
        "model": {
            "modelFormat": {"name": "pytorch"},
            "protocolVersion": "v1",
            "storageUri": storage_uri,
            "image": image or image_ref("serve"),
            "args": [
                "torchserve",
                "--foreground",
                "--no-config-snapshots",
                "--model-store=/mnt/models/model-store",
                "--ts-config=/mnt/models/config/config.properties",
            ],
            "env": [{"name": k, "value": v} for k, v in KSERVE_ENV.items()],
            "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": limits},
        },
    }
    if gpus:
        predictor["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": predictor},
    }


def kserve_manifest(
    uri: str,
    name: str,
    version_or_alias: str,
    *,
    service_name: str | None = None,
    gpus: int = 0,
    service_account: str = "ihl-s3",
    image: str | None = None,
    endpoint_url: str | None = None,
) -> dict:
    """The InferenceService for a registry version; an alias is resolved to its version
    now (KServe knows nothing of aliases) and the version is checked to be complete."""
    store = _Store(uri, endpoint_url)
    version, _ = store.resolve(name, version_or_alias)
    return inference_service(
        store.url(store.key(name, version)),
        name=service_name or name,
        gpus=gpus,
        service_account=service_account,
        image=image,
    )
