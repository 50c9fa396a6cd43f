"""`oasis run`: process logs up to --date and publish the scores of the next day."""
from __future__ import annotations

import argparse

from jobs import logs
from jobs.cli import args as a
from jobs.observe.hook import run_daily
from jobs.run import daily, summary
from jobs.run.options import RunOptions
from jobs.warehouse import backends


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="process logs up to --date and publish scores for the next day",
        description="Process logs up to day D and publish the score snapshot for D+1 (the score date). "
                    "Arguments not listed here are passed to Apache Beam as pipeline options "
                    "(e.g. --runner DataflowRunner --project P --region R --temp_location gs://...).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--date", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="last day of logs (YYYY-MM-DD); the scores are for the day after")
    a.add_input(p)
    a.add_output(p)
    a.add_config(p)
    a.add_warehouse(p)
    a.add_run_options(p)
    p.set_defaults(func=main, beam=True)


def main(args, beam_args: list[str]) -> int:
    options = RunOptions(method=args.method, skip_gates=tuple(args.skip_gate), force=args.force,
                         republish=args.republish)
    req = daily.RunRequest(as_of=args.date, input_root=args.input, output_root=args.output,
                           config_path=args.config, warehouse=args.warehouse, beam_args=beam_args, options=options)
    result = run_daily(req, progress=logs.progress)
    print(summary.render(result, backends.describe(args.warehouse, args.output)))
    return 0
