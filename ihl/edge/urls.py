"""URLs without secrets: what may be printed, logged or stored, and git credentials kept apart.

A token pasted into a git URL (``https://user:TOKEN@host/repo.git``) would otherwise reach
logs, pipeline metadata and the model card; ``redact_url`` removes the user information and
credential-like query values, and ``with_git_credentials`` puts credentials taken from the
environment (a Kubernetes secret) into the URL handed to git alone.
"""

from __future__ import annotations

import re
import urllib.parse

SECRET_QUERY_KEYS = re.compile(
    r"(token|access_token|password|passwd|secret|key|sig|signature|credential|x-amz-.*)",
    re.IGNORECASE,
)
HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with any user:password@ replaced by ``***@`` and secret query values by
    ``***``; anything that is not a URL with a scheme and host is returned as it is."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rsplit('@', 1)[1]}"
    query = urllib.parse.urlencode(
        [
            (k, HIDDEN if SECRET_QUERY_KEYS.fullmatch(k) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def has_credentials(url: str) -> bool:
    return redact_url(url) != url


def with_git_credentials(url: str, username: str, token: str) -> str:
    """An https ``url`` with ``username:token@`` (username ``git`` if empty) for git to use;
    ``url`` itself when there is no token or it is not https. Never print the result."""
    parts = urllib.parse.urlsplit(url)
    if not token or parts.scheme != "https" or not parts.hostname:
        return url
    user = urllib.parse.quote(username or "git", safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{urllib.parse.quote(token, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
