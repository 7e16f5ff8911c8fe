"""The one exception the data layer raises for bad files and records."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or record is missing, malformed or unreadable.

    The message always names the file and, where there is one, the record
    (annotation id or entry index) and key, so a user can find and fix it.
    """
