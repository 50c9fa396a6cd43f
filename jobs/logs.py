"""Logging for every `oasis` command: human text (default) or one JSON object
per line (`oasis --log-format json ...`) for log collectors.

A JSON record has `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`,
`exception` when there is one, and the run context bound with `bind()` (the
run's logs-up-to `date`, `score_date`, `snapshot_id`, ...) when known.

`bind()` sets a contextvar (right for code that runs several runs in threads
or tasks) and also the process-wide default, because Beam's DirectRunner logs
from worker threads that do not inherit the caller's context.

`progress(message)` is the one way long-running work reports progress: printed
to stderr in text mode, a log record of the `oasis.progress` logger (INFO,
shown whatever `--log-level` says) in JSON mode, so stderr stays one JSON
object per line.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys

FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
PROGRESS_LOGGER = "oasis.progress"
CLI_LOGGER = "oasis.cli"

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("oasis_log_context", default=None)
_process_context: dict = {}
_format = "text"


def current() -> dict:
    """The bound context of the caller (its contextvar, else the process default)."""
    ctx = _context.get()
    return dict(ctx if ctx is not None else _process_context)


class _Binding:
    """What `bind()` returns: the binding is already in effect; using it as a
    context manager restores the previous one on exit."""

    def __init__(self, token: contextvars.Token, previous_process: dict):
        self._token, self._previous_process = token, previous_process

    def __enter__(self) -> "_Binding":
        return self

    def __exit__(self, *exc) -> None:
        self.reset()

    def reset(self) -> None:
        global _process_context
        try:
            _context.reset(self._token)
        except ValueError:  # reset from another context: restore the value instead
            _context.set(self._previous_process or None)
        _process_context = self._previous_process


def bind(**fields) -> _Binding:
    """Add fields (e.g. `date=`, `snapshot_id=`) to every later log record of
    this run; a value of None removes the field. Dates are written as ISO
    strings. `with bind(...):` limits the binding to a block."""
    global _process_context
    new = current()
    for k, v in fields.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v
    token = _context.set(new)
    previous, _process_context = _process_context, dict(new)
    return _Binding(token, previous)


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record (as `record.oasis_context`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.oasis_context = current()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in getattr(record, "oasis_context", {}).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format, with the bound context appended in brackets."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = getattr(record, "oasis_context", {})
        if ctx:
            first, sep, rest = text.partition("\n")
            text = f"{first} [{' '.join(f'{k}={v}' for k, v in ctx.items())}]{sep}{rest}"
        return text


class _OasisHandler(logging.StreamHandler):
    """The handler `configure()` installs (a second call replaces it). Without
    an explicit stream it writes to whatever `sys.stderr` is at emit time."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._fixed = stream

    @property
    def stream(self):
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value):
        self._fixed = value


class _Exclude(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(self.prefixes)


def configure(format: str = "text", level: str | int = "WARNING", stream=None, exclude: tuple[str, ...] = ()) -> None:
    """Install the one stderr handler of the process (replacing one installed
    before by `configure` or `logging.basicConfig`). Records of loggers whose
    name starts with one of `exclude` are left to their own handlers (Luigi
    prints its own)."""
    global _format
    if format not in FORMATS:
        raise ValueError(f"unknown log format {format!r}: use one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _OasisHandler) or type(h) is logging.StreamHandler:
            root.removeHandler(h)
    handler = _OasisHandler(stream)
    handler.addFilter(ContextFilter())
    if exclude:
        handler.addFilter(_Exclude(tuple(exclude)))
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # progress is shown at any --log-level, as it is in text mode
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)
    logging.getLogger(CLI_LOGGER).setLevel(logging.INFO)  # the error line and notes, likewise
    # Beam's DEBUG records of its operations print element contents (table rows,
    # dead letters with user ids): never below INFO, whatever --log-level says.
    logging.getLogger("apache_beam.runners.worker.operations").setLevel(logging.INFO)
    if format == "json":
        logging.captureWarnings(True)  # warnings.warn() would write plain text to stderr
    _format = format


def log_format() -> str:
    return _format


def progress(message: str) -> None:
    """Report progress of long work (use as `daily.run(req, progress=logs.progress)`)."""
    if _format == "json":
        logging.getLogger(PROGRESS_LOGGER).info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def error_line(message: str) -> None:
    """The one line a failed command ends with (`oasis <command>: error: ...`):
    plain text on stderr, or in JSON mode a record of the `oasis.cli` logger at
    ERROR, so stderr stays one JSON object per line (a multi-line message stays
    one record)."""
    if _format == "json":
        logging.getLogger(CLI_LOGGER).error(message)
    else:
        print(message, file=sys.stderr, flush=True)


def warning_line(message: str) -> None:
    """A note for the user on stderr (plain, or a WARNING record of `oasis.cli`
    in JSON mode), shown whatever --log-level says."""
    if _format == "json":
        logging.getLogger(CLI_LOGGER).warning(message)
    else:
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------- secrets ---
_SENSITIVE_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "auth")


def _sensitive(text: str) -> bool:
    return any(w in text.lower() for w in _SENSITIVE_WORDS)


def redact_beam_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(Beam arguments with the value of every sensitive option replaced by
    "<redacted>", the secret values). Both forms count: `--name=value` and
    `--name value` (a separate argument, which a filter on single arguments
    would let through)."""
    out, secrets, redact_next = [], [], False
    for a in args:
        if redact_next and not a.startswith("-"):
            out.append("<redacted>")
            secrets.append(a)
            redact_next = False
            continue
        redact_next = False
        name, eq, value = a.partition("=")
        if a.startswith("-") and eq:
            if _sensitive(a):
                out.append(f"{name}=<redacted>")
                secrets.append(value)
            else:
                out.append(a)
        elif a.startswith("-"):
            out.append(a)
            redact_next = _sensitive(name)
        elif _sensitive(a):
            out.append("<redacted>")
            secrets.append(a)
        else:
            out.append(a)
    return out, [x for x in secrets if x]


class _RedactSecrets(logging.Filter):
    """Replaces secret option values in every log record (Beam itself logs
    arguments it cannot parse, values included)."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if any(x in message for x in self.secrets):
            for x in self.secrets:
                message = message.replace(x, "<redacted>")
            record.msg, record.args = message, None
        return True


@contextlib.contextmanager
def redacted(beam_args: list[str]):
    """Within the block, every log line has the secret values of `beam_args` redacted."""
    secrets = redact_beam_args(beam_args)[1]
    if not secrets:
        yield
        return
    f = _RedactSecrets(secrets)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(f)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(f)
