"""URLs that are printed, logged or stored carry no credentials (ihl.edge.urls)."""

from __future__ import annotations

import pytest

from ihl.edge.urls import has_credentials, redact_url, with_git_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bot:ghp_SECRET@github.com/org/data.git", "https://***@github.com/org/data.git"),
        ("https://ghp_SECRET@github.com/org/data.git", "https://***@github.com/org/data.git"),
        (
            "https://host/repo.git?access_token=SECRET&ref=main",
            "https://host/repo.git?access_token=***&ref=main",
        ),
        ("https://github.com/org/data.git", "https://github.com/org/data.git"),
        ("git@github.com:org/data.git", "git@github.com:org/data.git"),  # ssh: a key, no secret
        ("/srv/repos/data", "/srv/repos/data"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert "SECRET" not in redact_url(url)
    assert has_credentials(url) == (url != shown)


def test_git_credentials_go_into_the_url_given_to_git_only():
    url = "https://github.com/org/data.git"
    assert (
        with_git_credentials(url, "bot", "t/k@n") == "https://bot:t%2Fk%40n@github.com/org/data.git"
    )
    assert with_git_credentials(url, "", "tok") == "https://git:tok@github.com/org/data.git"
    assert with_git_credentials(url, "bot", "") == url
    assert with_git_credentials("/srv/repos/data", "bot", "tok") == "/srv/repos/data"
    assert (
        redact_url(with_git_credentials(url, "bot", "tok")) == "https://***@github.com/org/data.git"
    )


def test_redact_finds_every_url_inside_a_message():
    """Third-party errors quote URLs inside their own text (git's clone error, botocore's
    endpoint error): each is redacted where it stands, the rest of the text kept."""
    from ihl.edge.urls import redact

    message = (
        "Failed to clone repo 'https://bot:ghp_SECRET@github.com/org/data.git' to '/tmp/x'; "
        'Could not connect to the endpoint URL: "http://key:SECRET@127.0.0.1:9000/bucket?'
        'X-Amz-Signature=SECRET&list-type=2"'
    )
    assert redact(message) == (
        "Failed to clone repo 'https://***@github.com/org/data.git' to '/tmp/x'; "
        'Could not connect to the endpoint URL: "http://***@127.0.0.1:9000/bucket?'
        'X-Amz-Signature=***&list-type=2"'
    )
