"""The one exception type that reaches users as a one-line message (exit code 2)."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input: a file, a row or key, what was expected and what was found.

    The CLI prints ``str(err)`` on one line and exits with code 2, without a traceback.

    Args:
        source: the file (or option) that holds the bad input.
        expected: what a valid input looks like.
        found: what was there instead.
        where: optional row, key or position inside ``source``.
    """

    def __init__(self, source: str | os.PathLike, expected: str, found: str, *, where: str | None = None):
        self.source = str(source)
        self.expected = expected
        self.found = found
        self.where = where
        loc = f"{self.source}: {where}" if where else self.source
        super().__init__(f"{loc}: expected {expected}, found {found}")
