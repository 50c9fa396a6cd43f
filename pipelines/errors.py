"""The one base of every error a user can act on, and the errors a machine's
resources give (a full disk, a read-only or locked-down place) as such errors.

A command that fails with an `OasisError` prints one line,
`oasis <command>: error: <message>`, on stderr and exits 1 (`UsageError`: 2, as
for a bad argument). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno


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
    full = resource_error(e, "?") if isinstance(e, OSError) else None
    if full is not None:  # a full disk, a read-only place, wherever it surfaced: one line naming the path
        return str(full), 1
    text = str(e)
    for cls in sorted(_subclasses(OasisError), key=lambda c: c.__name__):
        marker = f"{cls.__name__}: "
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0], cls.exit_code
    cause = e.__cause__ or e.__context__
    if cause is not None:
        return user_error(cause)
    for words in ("no space left on device", "read-only file system", "disk quota exceeded"):
        if words in text.lower():  # a worker's OSError, wrapped by Beam with its text only
            line = next(x for x in text.splitlines() if words in x.lower())
            return line.strip()[-300:], 1
    return None


class StorageError(OasisError):
    """What the machine refused: no space left, a read-only or unwritable
    place, a file where a folder belongs. The message names the path."""


# errno -> words, and the same words as they appear inside the text of errors
# that lost their errno on the way (pyarrow's "Detail: [errno 28] ...", Beam's wrapping).
_RESOURCE_ERRORS = ((errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
                    (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied"),
                    (errno.EPERM, "operation not permitted"))


def resource_problem(e: BaseException) -> str | None:
    """"no space left on device", "read-only file system", ... when `e` (or its
    text) is one of the errors a full, read-only or locked-down disk gives;
    None for anything else."""
    code = getattr(e, "errno", None)
    text = str(e).lower()
    for number, words in _RESOURCE_ERRORS:
        if code == number or words in text or f"[errno {number}]" in text:
            return words
    return None


def resource_error(e: BaseException, path: str) -> StorageError | None:
    """The StorageError naming `path` (or the file the error names) that `e`
    stands for, or None when `e` is not a disk-full/read-only/permission error."""
    if isinstance(e, StorageError):
        return e
    words = resource_problem(e) if isinstance(e, OSError) else None
    if words is None:
        return None
    where = getattr(e, "filename", None) or path
    return StorageError(f"{where}: {words}")


@contextlib.contextmanager
def translated(path: str):
    """Turn a disk-full, read-only or permission OSError raised inside the block
    into a StorageError naming `path`; other errors pass unchanged."""
    try:
        yield
    except OSError as e:
        err = resource_error(e, path)
        if err is None or err is e:
            raise
        raise err from e
