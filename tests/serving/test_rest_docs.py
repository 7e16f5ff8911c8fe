"""docs/rest-api.md as a user runs it: every curl command of its bash blocks, as written,
against a real TorchServe serving the exported sample-preset model with a person detector
packed in its archive, so the page's requests without boxes go through the detector.

Each command runs in bash after the lines before it on the page (variables, request
files), in a folder holding the photos the page names and TorchServe's key_file.json.
``$IHL_URL`` points at a TorchServe serving that archive, ``$KSERVE_URL`` at one started
from its KServe config. The detector is randomly initialised with no score threshold, so
that it finds persons (at most ``PERSONS``) in any photo in no time: what is checked is that
the answers carry its boxes and scores, not that they are right.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from sample_data import REAL_IMAGES
from serving.conftest import BATCH_SIZE, MAX_BATCH_DELAY_MS
from serving.torchserve import TorchServe

from ihl.config import DetectorConfig
from ihl.detection.detect import detect
from ihl.detection.models import build_detector, save_detector
from ihl.edge.export import export_model

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "rest-api.md"
PHOTO = REAL_IMAGES / "000000000872.jpg"
PERSONS = 2


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
def detector_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = DetectorConfig(
        architecture="fcos_small", weights=None, min_size=96, max_size=128,
        score_threshold=0.0, max_persons=PERSONS,
    )  # fmt: skip
    return save_detector(
        tmp_path_factory.mktemp("detector") / "detector.pt", build_detector(cfg), cfg
    )


@pytest.fixture(scope="module")
def detected(detector_file) -> list[tuple[list[float], float]]:
    """(bbox, box_score) of each person the detector finds in the page's photo."""
    from ihl.detection.models import load_detector

    model, cfg = load_detector(detector_file)
    ((boxes, scores),) = detect(model, [np.asarray(Image.open(PHOTO).convert("RGB"))], cfg)
    assert len(boxes) == PERSONS
    return [(list(box), float(score)) for box, score in zip(boxes, scores, strict=True)]


@pytest.fixture(scope="module")
def docs_export(serving_checkpoint, detector_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-export") / "ihl-3"
    export_model(
        serving_checkpoint, out, name="ihl", version="3", detector=detector_file,
        batch_size=BATCH_SIZE, max_batch_delay=MAX_BATCH_DELAY_MS,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def docs_server(docs_export, tmp_path_factory):
    server = TorchServe(tmp_path_factory.mktemp("torchserve-docs"), docs_export / "model-store")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kserve(docs_export, tmp_path_factory):
    server = TorchServe(
        tmp_path_factory.mktemp("kserve-docs"),
        docs_export / "model-store",
        config=docs_export / "config" / "config.properties",
    )
    server.start()
    yield server
    server.stop()


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


def _person_answer(answer: dict, command: str, detected=None) -> None:
    """A served answer; for a request without boxes, ``detected`` are the detector's persons
    in its image, which the answer must hold, best first."""
    assert "persons" in answer, f"{command}\n{answer}"
    assert answer["persons"], command
    for person in answer["persons"]:
        assert len(person["keypoints"]) == 17
    if detected is not None:
        assert len(answer["persons"]) == len(detected), command
        for person, (box, score) in zip(answer["persons"], detected, strict=True):
            assert person["bbox"] == pytest.approx(box, abs=1e-3), command
            assert person["box_score"] == pytest.approx(score, abs=1e-5), command


def test_the_page_shows_every_form():
    shown = " ".join(command for _, command in commands())
    for form in ("-T ", "Content-Type: image/", "-F image=@", "-F data=@", "application/json"):
        assert form in shown, form
    assert "/v1/models/ihl:predict" in shown


def test_every_documented_curl_command_works(docs_server, folder, detected):
    shutil.copy(docs_server.workdir / "key_file.json", folder / "key_file.json")
    env = {"PATH": "/usr/bin:/bin", "IHL_URL": docs_server.inference_url}
    ran = unboxed = 0
    for setup, command in commands():
        if "$KSERVE_URL" in command:
            continue
        without_boxes = "boxes" not in command and "request.json" not in command
        answer = _run(folder, setup, command, env)
        _person_answer(answer, command, detected if without_boxes else None)
        ran += 1
        unboxed += without_boxes
    assert ran >= 6 and unboxed >= 3


def test_the_documented_kserve_command_works(kserve, folder, detected):
    env = {"PATH": "/usr/bin:/bin", "KSERVE_URL": kserve.inference_url}
    [(setup, command)] = [(s, c) for s, c in commands() if "$KSERVE_URL" in c]
    answer = _run(folder, [line for line in setup if "KEY=" not in line], command, env)
    assert len(answer["predictions"]) == 2
    assert '{"image": "%s"}' in setup[-1]  # the first instance has no boxes, the second has
    first, second = answer["predictions"]
    _person_answer(first, command, detected)
    _person_answer(second, command)
    assert [p["bbox"] for p in second["persons"]] == [[10, 20, 90, 150]]


def test_a_body_without_content_type_is_refused_as_the_page_says(docs_server, folder):
    """curl --data-binary without a Content-Type sends a URL-encoded form: TorchServe refuses
    the body itself (500) or the handler answers 415 with the fix; never a silent success."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = f"{docs_server.inference_url}/predictions/ihl"
    gray_jpeg = folder / "gray.jpg"
    Image.open(PHOTO).convert("L").save(gray_jpeg)
    statuses = {}
    for path in (folder / "photo.jpg", folder / "photo.png", gray_jpeg):
        response = requests.post(
            url, data=path.read_bytes(), headers=docs_server.headers() | form, timeout=120
        )
        statuses[path.name] = response.status_code
        if response.status_code == 415:
            assert "curl -T photo.jpg" in response.json()["error"]
        else:
            assert response.status_code == 500
            assert response.json()["type"] == "ErrorDataDecoderException"
    assert statuses["gray.jpg"] == 415, statuses  # the form TorchServe passes on


def test_200_concurrent_requests_are_all_served(docs_server):
    """TorchServe's default queue (100 requests) answered 503 to 78 of 200 concurrent ones."""
    photo = PHOTO.read_bytes()
    url = f"{docs_server.inference_url}/predictions/ihl"
    barrier = threading.Barrier(200)
    statuses: list[int] = []

    def client():
        barrier.wait()
        response = requests.put(url, data=photo, headers=docs_server.headers(), timeout=600)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert sorted(statuses) == [200] * 200, collections.Counter(statuses)
