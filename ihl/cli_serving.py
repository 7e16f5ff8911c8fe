"""`ihl export`: the TorchServe model archive, its KServe directory form and the model card."""

from __future__ import annotations

from ihl.cli import app  # noqa: F401 - commands here register on the main app
