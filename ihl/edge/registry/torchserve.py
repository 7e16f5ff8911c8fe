"""Register a registry version with a running TorchServe through its management API.

The archive is pulled and checked by ``store.pull``, copied into the server's model
store and registered by file name, so the server itself needs no S3 access.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ihl.edge.registry.store import (
    Progress,
    RegistryError,
    _Store,
    download,
    file_sha256,
    no_progress,
)
from ihl.files import replacing


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
    manifest_sha256: str | None = None,
    endpoint_url: str | None = None,
    progress: Progress = no_progress,
) -> dict:
    """Pull a version and register its archive with a running TorchServe.

    ``model_store`` is the server's model store: the verified archive is copied
    there as ``<name>-<version>.mar`` (atomically) and registered by that file
    name through the management API, so the server needs no S3 access and no
    ``allowed_urls`` change. The copy is removed again if registration fails.
    ``manifest_sha256`` pins the version (see ``store.pull``).
    Returns the server's model name and version, the file and its reply.
    """
    model_store = Path(model_store)
    if not model_store.is_dir():
        raise FileNotFoundError(f"TorchServe model store not found: {model_store}")
    with tempfile.TemporaryDirectory(prefix="ihl-pull-") as tmp:
        pulled = Path(tmp) / "v"
        version = download(
            _Store(uri, endpoint_url), name, version_or_alias, pulled,
            manifest_sha256=manifest_sha256, progress=progress,
        )  # fmt: skip
        archives = sorted((pulled / "model-store").glob("*.mar"))
        if len(archives) != 1:
            raise RegistryError(f"{name} {version} holds {len(archives)} archives; expected one")
        model_name, model_version = archive_identity(archives[0])
        target = model_store / f"{name}-{version}.mar"
        created = not target.exists()
        if not created and file_sha256(target) != file_sha256(archives[0]):
            raise FileExistsError(
                f"{target} exists with other contents; remove it or use another model store"
            )
        if created:  # a hidden partial name first: the store never shows half an archive
            with archives[0].open("rb") as source, replacing(target) as handle:
                shutil.copyfileobj(source, handle)
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
