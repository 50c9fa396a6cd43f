"""`oasis`: the command line. It parses and dispatches; the work lives in
`jobs.*` and `pipelines.*`, and nothing outside `jobs.cli` imports it.

Exit codes: 0 success; 1 a failure the message explains (nothing half-done was
published); 2 a usage error (a bad argument or option); 130 interrupted.
Every failure prints one line, `oasis <command>: error: <message>`, on stderr
(multi-line details follow on the next lines when there are any).
"""
from __future__ import annotations

import argparse
import os
import sys

from jobs import logs
from jobs.cli import args as a
from jobs.cli import (backfill, backtest, config, explain, run, sample, serving, simulate, snapshots, status,
                      validate, warehouse)
from pipelines.errors import user_error

DESCRIPTION = """OASIS promotion scores: joins campaign enrollments with engagement logs,
allocates promotion capacity per (market, surface) and publishes versioned
snapshots (Parquet + manifest) and warehouse tables (DuckDB or BigQuery).

Dates: a run is given the LOGS date D (the last day of engagement it reads) and
publishes scores for the SCORE date D+1; `explain` and `snapshots` speak of score
dates.

Exit codes: 0 success, 1 failure (one line on stderr says why), 2 usage error."""

COMMANDS = (run, backfill, backtest, snapshots, warehouse, explain, validate, sample, simulate, serving, config,
            status)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def global_flags(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--log-level and --log-format, accepted before the command (`oasis
    --log-format json run ...`) and after it (`oasis run ... --log-format json`).
    After the command their default is SUPPRESS, so they never undo a value
    given before it."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--log-level", default=default("WARNING"), type=str.upper, choices=LOG_LEVELS,
                   help="python logging level (default WARNING)")
    p.add_argument("--log-format", choices=["text", "json"], default=default("text"),
                   help="stderr logs as text, or one JSON object per line (with the run's date and snapshot id)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oasis", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    global_flags(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for p in a.leaf_parsers(ap):
        global_flags(p, suppress=True)
    return ap


def command_name(args) -> str:
    return " ".join(x for x in ("oasis", getattr(args, "command", None), getattr(args, "action", None)) if x)


def wants_json(argv: list[str]) -> bool:
    """--log-format json anywhere on the line (known before argparse has run)."""
    return any(a == "--log-format=json" or (a == "--log-format" and i + 1 < len(argv) and argv[i + 1] == "json")
               for i, a in enumerate(argv))


def json_usage_errors(ap: argparse.ArgumentParser) -> None:
    """In JSON mode a usage error is a JSON record too, so stderr stays one
    JSON object per line (argparse would print its usage text)."""
    def error(p, message):
        logs.configure("json")
        logs.error_line(f"{p.prog}: error: {message}")
        sys.exit(2)
    for p in [ap] + a.leaf_parsers(ap):
        p.error = (lambda p: lambda message: error(p, message))(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser()
    if wants_json(argv):
        json_usage_errors(ap)
    args, rest = ap.parse_known_args(argv)
    leaf = a.leaf_parser(ap, args)
    if rest and not getattr(args, "beam", False):
        leaf.error(a.unrecognized(rest, leaf))
    if rest:
        problem = a.check_beam_args(rest, leaf)  # typos and stray words fail here, before any work
        if problem:
            leaf.error(problem)
    logs.configure(args.log_format, args.log_level)
    try:
        code = args.func(args, rest)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        logs.error_line(f"{command_name(args)}: interrupted")
        return 130
    except BrokenPipeError:
        # `oasis snapshots list | head`: the reader went away; nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the one place that turns failures into a message and exit code
        known = user_error(e)
        if known is None:
            raise
        message, code = known
        logs.error_line(f"{command_name(args)}: error: {message}")
        return code


if __name__ == "__main__":
    sys.exit(main())
