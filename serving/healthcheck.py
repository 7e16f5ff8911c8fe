"""The serve image's health check: TorchServe's /ping with a current inference key.

    python3 healthcheck.py [PING_URL] [MANAGEMENT_URL]   (run in TorchServe's working directory)

With token authorization on, /ping needs the inference key, and TorchServe 0.12's
keys expire (``token_expiration_min`` in serving/config.properties) without being
renewed: a check that sent the key it found in key_file.json turned unhealthy once
that key expired. The API key in key_file.json never expires and is what renews
the others (``POST /token?type=inference`` on the management API; TorchServe then
writes the new key into key_file.json). So this check renews the inference key when
it has expired or expires within ``MARGIN``, then pings with the current one; clients
read the same file, or renew the same way (docs/rest-api.md). Without key_file.json
(token authorization off, as under KServe) it pings without a key.

Standard library only; exit status 0 means healthy.
"""

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

KEY_FILE = Path("key_file.json")
MARGIN = timedelta(seconds=60)
"""Renew this long before expiry, so that a client reading the file gets a key that lasts."""
TIMEOUT = 4


def _expires(entry: dict) -> datetime:
    """TorchServe writes e.g. 2026-11-30T09:34:42.537494636Z (nanoseconds); seconds suffice."""
    return datetime.strptime(entry["expiration time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def current_key(management_url: str) -> str:
    """The inference key from key_file.json, renewed with the API key if it is (nearly) expired."""
    keys = json.loads(KEY_FILE.read_text())
    if _expires(keys["inference"]) - datetime.now(UTC) > MARGIN:
        return keys["inference"]["key"]
    renew = urllib.request.Request(
        f"{management_url}/token?type=inference",
        method="POST",
        headers={"Authorization": f"Bearer {keys['API']['key']}"},
    )
    with urllib.request.urlopen(renew, timeout=TIMEOUT):
        pass
    return json.loads(KEY_FILE.read_text())["inference"]["key"]


def healthy(ping_url: str, management_url: str) -> bool:
    headers = {}
    if KEY_FILE.is_file():
        headers["Authorization"] = f"Bearer {current_key(management_url)}"
    ping = urllib.request.Request(ping_url, headers=headers)
    with urllib.request.urlopen(ping, timeout=TIMEOUT) as response:
        return json.load(response).get("status") == "Healthy"


def main(argv: list[str]) -> int:
    ping_url = argv[0] if argv else "http://127.0.0.1:8080/ping"
    management_url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8081"
    try:
        return 0 if healthy(ping_url, management_url.rstrip("/")) else 1
    except (OSError, ValueError, KeyError) as err:  # URLError and HTTPError are OSErrors
        print(f"unhealthy: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
