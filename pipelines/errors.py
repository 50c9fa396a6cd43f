"""The one base of every error a user can act on.

A command that fails with an `OasisError` prints one line,
`oasis <command>: error: <message>`, on stderr and exits 1 (`UsageError`: 2, as
for a bad argument). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class OasisError(Exception):
    """A failure the user can act on; the message says what and where."""

    exit_code = 1


class UsageError(OasisError):
    """A request that cannot be valid: a bad argument or option value."""

    exit_code = 2
