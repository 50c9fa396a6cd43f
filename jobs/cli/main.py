"""`oasis`: the command line. It parses and dispatches; the work lives in
`jobs.*` and `pipelines.*`."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

DESCRIPTION = """OASIS promotion scores: joins campaign enrollments with engagement logs,
allocates promotion capacity per (market, surface) and publishes versioned
snapshots (Parquet + manifest) and warehouse tables (DuckDB or BigQuery)."""


def date_arg(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {s!r}") from None


def _add_run(sub):
    p = sub.add_parser(
        "run", help="process logs up to --date and publish scores for the next day",
        description="Process logs up to day D and publish the score snapshot for D+1. Arguments "
                    "not listed here are passed to Apache Beam as pipeline options "
                    "(e.g. --runner DataflowRunner --project P --region R --temp_location gs://...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--date", type=date_arg, required=True, help="last day of logs (YYYY-MM-DD); scores are for the day after")
    p.add_argument("--input", required=True, help="input root: local folder or gs://bucket/prefix")
    p.add_argument("--output", required=True, help="output root: local folder or gs://bucket/prefix")
    p.add_argument("--config", default=None, help="TOML file overriding the defaults (see `oasis config`)")
    p.add_argument("--warehouse", default=None,
                   help="bq://PROJECT.DATASET, or a .duckdb path; default OUTPUT/warehouse.duckdb")
    p.add_argument("--force", action="store_true", help="publish again even if the same inputs, config and code "
                   "were already published for this date")
    p.add_argument("--method", choices=["auto", "exact", "dual"], default="auto",
                   help="allocation solver: exact (HiGHS), dual (ridge-regularised dual ascent polished to the "
                        "exact optimum), auto (exact below 5,000 eligible tracks per problem, dual above)")
    from jobs.gates.checks import GATES

    p.add_argument("--skip-gate", action="append", default=[], choices=list(GATES), metavar="NAME",
                   help="publish even if this validation gate fails (repeatable), for an engineer who has "
                        "checked it by hand; it is still measured and recorded as skipped in the manifest. "
                        "Gates: " + ", ".join(GATES))
    p.set_defaults(func=_cmd_run, beam=True)


def _cmd_run(args, beam_args) -> int:
    from jobs.run import daily
    from jobs.run import summary

    req = daily.RunRequest(as_of=args.date, input_root=args.input, output_root=args.output,
                           config_path=args.config, warehouse=args.warehouse, beam_args=beam_args,
                           force=args.force, method=args.method, skip_gates=args.skip_gate)
    from jobs import logs

    result = daily.run(req, progress=logs.progress)
    wh = args.warehouse or f"{args.output.rstrip('/')}/warehouse.duckdb"
    print(summary.render(result, args.output, wh))
    return 0


def _add_sample(sub):
    from jobs.sample import world as sample

    p = sub.add_parser("sample", help="generate a realistic synthetic world in the input contract",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sample.add_arguments(p)
    p.set_defaults(func=lambda args, _: sample.main(args), beam=False)


def _add_config(sub):
    p = sub.add_parser("config", help="print the default config (every parameter, documented)")
    p.set_defaults(func=_cmd_config, beam=False)


def _cmd_config(args, _) -> int:
    from pipelines.config import defaults_toml

    print(defaults_toml())
    return 0


COMMANDS = [_add_run, _add_sample, _add_config]
# Modules that add their own subcommand with `register(subparsers)`.
COMMAND_MODULES: list[str] = [
    "jobs.run.backfill",
    "jobs.snapshots.admin",
    "jobs.explain",
    "jobs.input_check",
]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oasis", description=DESCRIPTION)
    ap.add_argument("--log-level", default="WARNING", help="python logging level")
    ap.add_argument("--log-format", choices=["text", "json"], default="text",
                    help="stderr logs as text, or one JSON object per line (with the run's date and snapshot id)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    from jobs.cli.errors import explain_error

    ap = parser()
    args, rest = ap.parse_known_args(argv)
    if rest and not getattr(args, "beam", False):
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    from jobs import logs

    logs.configure(args.log_format, args.log_level)
    try:
        return args.func(args, rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one place turns failures into a message and exit code
        message = explain_error(e)
        if message is None:
            raise
        print(f"oasis: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
