"""A git token never becomes a run parameter: runs refuse a dvc_repo that carries one."""

from __future__ import annotations

import pytest

from pipelines.training import check_arguments


def test_a_dvc_repo_with_a_token_is_refused_without_showing_it():
    with pytest.raises(ValueError) as err:
        check_arguments(
            {"data_source": "dvc", "dvc_repo": "https://bot:ghp_SECRET@github.com/org/data.git"}
        )
    assert "ihl-git" in str(err.value)
    assert "SECRET" not in str(err.value)


def test_a_plain_dvc_repo_is_accepted():
    args = check_arguments({"data_source": "dvc", "dvc_repo": "https://github.com/org/data.git"})
    assert args["dvc_repo"] == "https://github.com/org/data.git"
