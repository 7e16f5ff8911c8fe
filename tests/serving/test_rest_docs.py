"""docs/rest-api.md as a user runs it: every curl command of its bash blocks, as written,
against a real TorchServe serving the exported sample-preset model with a person detector
packed in its archive, so the page's requests without boxes go through the detector.

Each command runs in bash after the lines before it on the page (variables, request
files), in a folder holding the photos the page names and TorchServe's key_file.json.
``$IHL_URL`` points at the session's TorchServe serving that archive, ``$KSERVE_URL`` at the
one started from its KServe config (tests/serving/conftest.py). A request with boxes must
answer exactly those boxes; one without, the detector's persons in its image.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from sample_data import REAL_IMAGES
from serving.conftest import PERSONS

from ihl.detection.detect import detect

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "rest-api.md"
PHOTO = REAL_IMAGES / "000000000872.jpg"


def doc_lines() -> list[str]:
    """The shell lines of the page's bash blocks, in order, continuations joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip()]


def commands() -> list[tuple[list[str], str]]:
    """(the other lines before it, the curl command) for every curl command of the page."""
    lines = doc_lines()
    setup = [line for line in lines if not line.startswith("curl ")]
    return [
        ([s for s in setup if lines.index(s) < i], line)
        for i, line in enumerate(lines)
        if line.startswith("curl ")
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The user's folder: the photos the page names."""
    path = tmp_path_factory.mktemp("user")
    shutil.copy(PHOTO, path / "photo.jpg")
    image = Image.open(PHOTO)
    image.save(path / "photo.png")
    image.convert("L").save(path / "gray.png")
    return path


@pytest.fixture(scope="module")
def detected(served_detector) -> list[tuple[list[float], float]]:
    """(bbox, box_score) of each person the detector finds in the page's photo."""
    model, cfg = served_detector
    ((boxes, scores),) = detect(model, [np.asarray(Image.open(PHOTO).convert("RGB"))], cfg)
    assert len(boxes) == PERSONS
    return [(list(box), float(score)) for box, score in zip(boxes, scores, strict=True)]


def given_boxes(setup: list[str], command: str) -> list[tuple[list[float], float]] | None:
    """(bbox as [x, y, w, h], box_score) of each box the command sends (in a form field, or
    in the request file a line before it wrote); None when it sends none."""
    found = re.search(r"boxes=(\[\[.*?\]\])'", command)
    box_format = re.search(r"box_format=(\w+)", command)
    if found is None and "request.json" in command:
        [written] = [line for line in setup if "> request.json" in line]
        found = re.search(r'"boxes": (\[\[.*?\]\])', written)
        box_format = re.search(r'"box_format": "(\w+)"', written)
    if found is None:
        return None
    boxes = []
    for box in json.loads(found.group(1)):
        x, y, w, h = box[:4]
        if box_format is not None and box_format.group(1) == "xyxy":
            w, h = w - x, h - y
        boxes.append(([x, y, w, h], box[4] if len(box) == 5 else 1.0))
    return boxes


def _run(folder: Path, setup: list[str], command: str, env: dict[str, str]) -> dict:
    script = "set -euo pipefail\n" + "\n".join([*setup, command]) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"{command}\nanswered with something that is not JSON:\n{done.stdout[:500]}")


def _person_answer(answer: dict, command: str, boxes) -> None:
    """A served answer holding exactly ``boxes``, (bbox, box_score) in order: the boxes sent,
    or for a request without boxes the detector's persons in its image, best first."""
    assert "persons" in answer, f"{command}\n{answer}"
    assert len(answer["persons"]) == len(boxes), f"{command}\n{answer['persons']}"
    for person, (box, score) in zip(answer["persons"], boxes, strict=True):
        assert len(person["keypoints"]) == 17
        assert person["bbox"] == pytest.approx(box, abs=1e-3), command
        assert person["box_score"] == pytest.approx(score, abs=1e-5), command


def test_the_page_shows_every_form():
    shown = " ".join(command for _, command in commands())
    for form in ("-T ", "Content-Type: image/", "-F image=@", "-F data=@", "application/json"):
        assert form in shown, form
    assert "/v1/models/ihl:predict" in shown


def test_every_documented_curl_command_works(torchserve, folder, detected):
    shutil.copy(torchserve.workdir / "key_file.json", folder / "key_file.json")
    env = {"PATH": "/usr/bin:/bin", "IHL_URL": torchserve.inference_url}
    ran = boxed = 0
    for setup, command in commands():
        if "$KSERVE_URL" in command:
            continue
        boxes = given_boxes(setup, command)
        answer = _run(folder, setup, command, env)
        _person_answer(answer, command, detected if boxes is None else boxes)
        ran += 1
        boxed += boxes is not None
    assert ran >= 6 and boxed >= 3


def test_the_documented_kserve_command_works(kserve, folder, detected):
    env = {"PATH": "/usr/bin:/bin", "KSERVE_URL": kserve.inference_url}
    [(setup, command)] = [(s, c) for s, c in commands() if "$KSERVE_URL" in c]
    answer = _run(folder, [line for line in setup if "KEY=" not in line], command, env)
    assert len(answer["predictions"]) == 2
    assert '{"image": "%s"}' in setup[-1]  # the first instance has no boxes, the second has
    first, second = answer["predictions"]
    _person_answer(first, command, detected)
    _person_answer(second, command, [([10, 20, 90, 150], 1.0)])


def test_a_body_without_content_type_is_refused_as_the_page_says(torchserve, folder):
    """curl --data-binary without a Content-Type sends a URL-encoded form: TorchServe refuses
    the body itself (500) or the handler answers 415 with the fix; never a silent success."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = f"{torchserve.inference_url}/predictions/ihl"
    gray_jpeg = folder / "gray.jpg"
    Image.open(PHOTO).convert("L").save(gray_jpeg)
    statuses = {}
    for path in (folder / "photo.jpg", folder / "photo.png", gray_jpeg):
        response = requests.post(
            url, data=path.read_bytes(), headers=torchserve.headers() | form, timeout=120
        )
        statuses[path.name] = response.status_code
        if response.status_code == 415:
            assert "curl -T photo.jpg" in response.json()["error"]
        else:
            assert response.status_code == 500
            assert response.json()["type"] == "ErrorDataDecoderException"
    assert statuses["gray.jpg"] == 415, statuses  # the form TorchServe passes on


def test_200_concurrent_clients_are_all_served_retrying_503(torchserve):
    """Past ``job_queue_size`` waiting requests (sized to the Java heap, serving/
    config.properties) TorchServe answers 503 at once; a client that retries is served, and
    the worker never restarts."""
    photo = PHOTO.read_bytes()
    url = f"{torchserve.inference_url}/predictions/ihl"
    barrier = threading.Barrier(200)
    statuses: list[int] = []
    busy: list[int] = []
    starts = torchserve.worker_starts()

    def client():
        barrier.wait()
        for _ in range(100):
            response = requests.put(url, data=photo, headers=torchserve.headers(), timeout=600)
            if response.status_code != 503:
                break
            busy.append(503)
            time.sleep(1)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    print(f"200 concurrent clients: {len(busy)} answers 503 (queue full), retried")
    assert sorted(statuses) == [200] * 200, collections.Counter(statuses)
    assert torchserve.worker_starts() == starts
