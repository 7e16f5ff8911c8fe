"""The one rule for model names, versions and aliases, shared by export and the registry."""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Model names, versions and aliases: safe as S3 keys, file names and TorchServe model names."""
