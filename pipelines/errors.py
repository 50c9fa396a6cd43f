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


def _subclasses(cls) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


def user_error(e: BaseException) -> tuple[str, int] | None:
    """(message, exit code) when `e` is, or wraps, an error the user can act
    on; None for a bug. Beam re-raises an exception from inside a DoFn as
    another type, with the original's "TypeName: message" in its text: ours is
    found there too."""
    if isinstance(e, OasisError):
        return str(e), e.exit_code
    if isinstance(e, FileNotFoundError):
        return str(e), 1
    text = str(e)
    for cls in sorted(_subclasses(OasisError), key=lambda c: c.__name__):
        marker = f"{cls.__name__}: "
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0], cls.exit_code
    cause = e.__cause__ or e.__context__
    return user_error(cause) if cause is not None else None
