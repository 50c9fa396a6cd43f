"""Which failures are the user's to act on (one line, `oasis <command>: error:
<message>`, exit 1, or 2 for a usage error) and which are bugs (a traceback)."""
from __future__ import annotations

from pipelines.errors import OasisError, resource_error


def _subclasses(cls) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


def user_error(e: BaseException) -> tuple[str, int] | None:
    """(message, exit code) when `e` is, or wraps, an error the user can act
    on; None for a bug."""
    if isinstance(e, OasisError):
        return str(e), e.exit_code
    if isinstance(e, FileNotFoundError):
        return str(e), 1
    full = resource_error(e, "?") if isinstance(e, OSError) else None
    if full is not None:  # a full disk, a read-only place, wherever it surfaced: one line naming the path
        return str(full), 1
    # Beam re-raises an exception from inside a DoFn as another type, with the
    # original's "TypeName: message" in its text: find ours there.
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
