"""`oasis`: the command line. It parses and dispatches; the work lives in
`jobs.*` and `pipelines.*`, and nothing outside `jobs.cli` imports it.

Exit codes: 0 success; 1 a failure the message explains (nothing half-done was
published); 2 a usage error (a bad argument or option); 130 interrupted.
Every failure prints one line, `oasis <command>: error: <message>`, on stderr
(multi-line details follow on the next lines when there are any).
"""
from __future__ import annotations

import argparse
import sys

from jobs import logs
from jobs.cli import backfill, config, explain, run, sample, simulate, snapshots, validate
from jobs.cli.errors import user_error

DESCRIPTION = """OASIS promotion scores: joins campaign enrollments with engagement logs,
allocates promotion capacity per (market, surface) and publishes versioned
snapshots (Parquet + manifest) and warehouse tables (DuckDB or BigQuery).

Dates: a run is given the LOGS date D (the last day of engagement it reads) and
publishes scores for the SCORE date D+1; `explain` and `snapshots` speak of score
dates.

Exit codes: 0 success, 1 failure (one line on stderr says why), 2 usage error."""

COMMANDS = (run, backfill, snapshots, explain, validate, sample, simulate, config)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oasis", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                    help="python logging level (default WARNING)")
    ap.add_argument("--log-format", choices=["text", "json"], default="text",
                    help="stderr logs as text, or one JSON object per line (with the run's date and snapshot id)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return ap


def command_name(args) -> str:
    return " ".join(x for x in ("oasis", getattr(args, "command", None), getattr(args, "action", None)) if x)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args, rest = ap.parse_known_args(argv)
    if rest and not getattr(args, "beam", False):
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.configure(args.log_format, args.log_level)
    try:
        return args.func(args, rest)
    except KeyboardInterrupt:
        print(f"{command_name(args)}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns failures into a message and exit code
        known = user_error(e)
        if known is None:
            raise
        message, code = known
        print(f"{command_name(args)}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
