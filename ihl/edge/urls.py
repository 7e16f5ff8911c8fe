"""URLs without secrets: what may be printed, logged or stored, and git credentials kept apart.

A token pasted into a git URL (``https://user:TOKEN@host/repo.git``) would otherwise reach
logs, pipeline metadata and the model card; ``redact`` removes the user information and
credential-like query values of every URL in a text (``redact_url`` of one URL), and
``with_git_credentials`` puts credentials taken from the environment (a Kubernetes secret)
into the URL handed to git alone.
"""

from __future__ import annotations

import re
import urllib.parse

SECRET_QUERY_KEYS = re.compile(
    r"(token|access_token|password|passwd|secret|key|sig|signature|credential|x-amz-.*)",
    re.IGNORECASE,
)
HIDDEN = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#'\"<>]+@")
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^=&#\s'\"<>]+)=(?P<value>[^&#\s'\"<>]*)")


def redact(text: str) -> str:
    """``text`` with every URL's user information (``user:password@``) replaced by ``***@``
    and the values of credential-like query keys by ``***``, wherever the URLs stand in it: a
    URL alone, or an error message of git, DVC or botocore that quotes one."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)

    def query(match: re.Match) -> str:
        secret = SECRET_QUERY_KEYS.fullmatch(match["key"][1:])
        return f"{match['key']}={HIDDEN}" if secret and match["value"] else match[0]

    return _QUERY_VALUE.sub(query, text)


redact_url = redact
"""One URL, to print or store: what ``redact`` does to text."""


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
