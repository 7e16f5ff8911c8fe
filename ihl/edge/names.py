"""The one rule for model names, versions and aliases, shared by export and the registry."""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Model names, versions and aliases: safe as S3 keys, file names and TorchServe model names."""


def check_name(value: str, what: str, error: type[Exception] = ValueError) -> str:
    """``value`` if it follows ``NAME``, else ``error`` naming ``what`` (e.g. "model name")."""
    if not NAME.fullmatch(value):
        raise error(
            f"{what} {value!r}: use letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (at most 100 characters)"
        )
    return value
