"""`oasis backtest`: rolling-origin, one-day-ahead accuracy of the supply
forecasts (computed by `jobs.backtest.run`; this prints its progress and
summary)."""
from __future__ import annotations

import sys

from jobs.backtest import accuracy
from jobs.backtest.run import BacktestRequest, backtest
from jobs.cli import args as a


def register(sub) -> None:
    p = sub.add_parser(
        "backtest", help="forecast accuracy over a range of origins (one day ahead), against two baselines",
        description="For every logs date D from --start to --end (both inclusive), forecast each enrolled "
                    "track's organic plays (E) and each surface's total plays (S) for D+1 from the data up to D, "
                    "exactly as `oasis run --date D` does, and compare them, and the decayed mean and the "
                    "same-weekday-last-week forecast, with D+1's plays. Writes the forecast_accuracy table (per "
                    "origin, market, surface, track cohort and method: WAPE, bias, 80% interval coverage, rows) "
                    "to OUT/backtests/<id>/ and the warehouse, and prints a summary. Missing daily aggregates "
                    "are built from IN's raw partitions (and kept for later runs). Arguments not listed here "
                    "are passed to Apache Beam as pipeline options.")
    p.add_argument("--start", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="first origin (a logs date, YYYY-MM-DD), inclusive")
    p.add_argument("--end", type=a.date_arg, required=True, metavar="LOGS_DATE",
                   help="last origin, inclusive; its next day's engagement must exist")
    a.add_input(p)
    a.add_output(p)
    a.add_config(p)
    a.add_warehouse(p)
    p.set_defaults(func=main, beam=True)


def main(args, beam_args: list[str]) -> int:
    req = BacktestRequest(start=args.start, end=args.end, input_root=args.input, output_root=args.output,
                          config_path=args.config, warehouse=args.warehouse, beam_args=beam_args)
    result = backtest(req, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"backtest {result.backtest_id}: {len(result.origins)} origin(s) compared"
          + (f", {len(result.skipped)} skipped ({', '.join(f'{d}: {w}' for d, w in result.skipped.items())})"
             if result.skipped else "") + f" in {result.seconds:.1f} s")
    print(accuracy.summary_text(result.table))
    print(f"table:      {result.folder}/forecast_accuracy (and _MANIFEST.json)")
    print(f"warehouse:  {result.warehouse} (forecast_accuracy)")
    return 0
