"""TorchServe keys that expire: the serve image's HEALTHCHECK stays healthy past the expiry
and clients reading key_file.json get a key that works.

TorchServe runs directly (no container runtime here) with keys that expire after 6 s;
the Dockerfile's HEALTHCHECK command runs as Docker runs it, in TorchServe's working
directory, with the image's /opt/ihl/serving pointing at the repository's serving/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sample_data import REAL_IMAGES
from serving.torchserve import TorchServe

REPO = Path(__file__).resolve().parents[2]
PHOTO = REAL_IMAGES / "000000000872.jpg"
EXPIRY_MIN = "0.1"  # 6 s


@pytest.fixture(scope="module")
def expiring(export_dir, tmp_path_factory):
    server = TorchServe(
        tmp_path_factory.mktemp("expiring"),
        export_dir / "model-store",
        token_expiration_min=EXPIRY_MIN,
    )
    server.start()
    yield server
    server.stop()


def healthcheck_command(server: TorchServe) -> list[str]:
    """The serve image's HEALTHCHECK CMD, aimed at this server."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    serve = text[text.index(" AS serve") :]
    [command] = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", serve, re.MULTILINE)
    args = json.loads(command)
    args = [a.replace("/opt/ihl/serving", str(REPO / "serving")) for a in args]
    args = [a.replace("http://127.0.0.1:8080", server.inference_url) for a in args]
    args = [a.replace("http://127.0.0.1:8081", server.management_url) for a in args]
    return [sys.executable if a == "python3" else a for a in args]


def _expiry(server: TorchServe) -> datetime:
    entry = json.loads((server.workdir / "key_file.json").read_text())["inference"]
    return datetime.strptime(entry["expiration time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def test_health_check_stays_good_past_key_expiry(expiring):
    command = healthcheck_command(expiring)
    for _ in range(2):  # two expiries in a row
        stale = json.loads((expiring.workdir / "key_file.json").read_text())["inference"]["key"]
        time.sleep(max(0.0, (_expiry(expiring) - datetime.now(UTC)).total_seconds()) + 1.5)
        ping = requests.get(
            f"{expiring.inference_url}/ping",
            headers={"Authorization": f"Bearer {stale}"},
            timeout=10,
        )
        assert ping.status_code in (400, 401), "the key did not expire: the test shows nothing"
        check = subprocess.run(command, cwd=expiring.workdir, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # a client reading key_file.json now, as docs/rest-api.md says, is served
        key = json.loads((expiring.workdir / "key_file.json").read_text())["inference"]["key"]
        response = requests.put(
            f"{expiring.inference_url}/predictions/ihl",
            data=PHOTO.read_bytes(),
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text


def test_the_project_config_sets_the_expiry():
    text = (REPO / "serving" / "config.properties").read_text()
    assert re.search(r"^token_expiration_min=\d+$", text, re.MULTILINE)
