"""A registry version registered with a real TorchServe through its management API,
then answering a prediction: export -> push -> promote -> register -> predict."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from sample_data import REAL_IMAGES
from serving.torchserve import TorchServe

from ihl.edge.registry.store import push


@pytest.mark.slow
def test_register_a_pulled_version_and_predict(cli, bucket, real_export, tmp_path):
    uri = f"s3://{bucket}/models"
    push(real_export, uri, "ihl", "1")
    assert cli("registry", "promote", uri, "ihl", "1").exit_code == 0

    store = tmp_path / "store"
    store.mkdir()
    server = TorchServe(tmp_path / "ts", store, enable_model_api="true").start()
    try:
        register = ["registry", "register", uri, "ihl", "production", "--model-store", store]
        register += ["--management-url", server.management_url]

        refused = cli(*register, "--token", "not-the-key")
        assert refused.exit_code == 2, refused.output
        assert "management key" in refused.output
        assert list(store.iterdir()) == []

        done = cli(*register, "--key-file", tmp_path / "ts" / "key_file.json", "--set-default")
        assert done.exit_code == 0, done.output + server.log_tail()
        assert [p.name for p in store.iterdir()] == ["ihl-1.mar"]
        again = cli(*register, "--key-file", tmp_path / "ts" / "key_file.json")
        assert again.exit_code == 2 and "registered already" in again.output
        assert [p.name for p in store.iterdir()] == ["ihl-1.mar"]

        photo = (REAL_IMAGES / "000000000872.jpg").read_bytes()
        request = urllib.request.Request(
            f"{server.inference_url}/predictions/ihl",
            data=photo,
            headers={**server.headers(), "Content-Type": "image/jpeg"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as err:
            pytest.fail(f"prediction failed: {err.code} {err.read()!r}\n{server.log_tail()}")
        [person] = answer["persons"]
        assert len(person["keypoints"]) == 17
        assert answer["model"] == {"name": "ihl", "version": "1"}
    finally:
        server.stop()
