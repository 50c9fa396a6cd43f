"""Which failures are the user's to fix (a message, exit 1) and which are bugs
(a traceback)."""
from __future__ import annotations


def explain_error(e: BaseException) -> str | None:
    from jobs.run.daily import RunFailed
    from jobs.warehouse.base import WarehouseError
    from pipelines.config import ConfigError
    from pipelines.contract import InputFileError

    known = (RunFailed, WarehouseError, ConfigError, InputFileError, FileNotFoundError)
    if isinstance(e, known):
        return str(e)
    # Beam wraps exceptions raised inside a DoFn; find ours in the message chain.
    text = str(e)
    for marker in ("InputFileError: ",):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    cause = e.__cause__ or e.__context__
    return explain_error(cause) if cause is not None else None
