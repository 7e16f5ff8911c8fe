"""A failed DVC clone in `prepare` never prints the git token: the component's error, and
everything Python would print for it uncaught, name the repository without credentials."""

from __future__ import annotations

import traceback

import pytest
from kfp.dsl import Dataset
from servers import free_port

from components import prepare


def test_a_failed_clone_does_not_print_the_token(monkeypatch, tmp_path, capfd, caplog):
    monkeypatch.setenv("IHL_GIT_USERNAME", "bot")
    monkeypatch.setenv("IHL_GIT_TOKEN", "ghp_SECRET")
    repo = f"https://127.0.0.1:{free_port()}/org/data.git"  # nothing listens: the clone fails
    prepared = Dataset(name="prepared", uri=str(tmp_path / "prepared"), metadata={})
    with pytest.raises(Exception) as raised:
        prepare.python_func(
            dataset="synth", data_source="dvc", data_path="data/synth", dvc_repo=repo,
            dvc_rev="", volume=str(tmp_path / "volume"), image="img", prepared=prepared,
        )  # fmt: skip
    printed = "".join(traceback.format_exception(raised.value))  # the pod log of an uncaught one
    out, err = capfd.readouterr()
    assert "127.0.0.1" in printed  # the error still says which repository
    for text in (printed, out, err, caplog.text):
        assert "ghp_SECRET" not in text
