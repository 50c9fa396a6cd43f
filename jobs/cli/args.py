"""Every flag more than one command takes, declared once, and the argument
types of the command line."""
from __future__ import annotations

import argparse
import datetime as dt

from jobs.gates.checks import GATES
from jobs.run.options import DEFAULT_METHOD
from pipelines.allocation.solve import METHODS


# ------------------------------------------------------------------- types ---
def date_arg(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {s!r}") from None


def positive_int(s: str) -> int:
    n = _int(s)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def non_negative_int(s: str) -> int:
    n = _int(s)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def non_negative_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v >= 0 or v == float("inf"):  # rejects NaN too
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s!r}")
    return v


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {s!r}") from None


# ------------------------------------------------------------------- flags ---
def add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="IN", help="input root: local folder or gs://bucket/prefix")


def add_output(p: argparse.ArgumentParser, what: str = "output root") -> None:
    p.add_argument("--output", required=True, metavar="OUT", help=f"{what}: local folder or gs://bucket/prefix")


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file overriding the default config (see `oasis config`)")


def add_warehouse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", default=None, metavar="URI",
                   help="bq://PROJECT.DATASET, or a .duckdb path (default: OUT/warehouse.duckdb)")


def add_serving_freshness(p: argparse.ArgumentParser) -> None:
    """How a serving reader judges a snapshot's age (`jobs.serving`)."""
    p.add_argument("--today", type=date_arg, default=None, metavar="DATE",
                   help="the day serving uses the scores on (default: today, UTC); rows whose flight ended before "
                        "it are left out, and the snapshot's age is counted to it")
    p.add_argument("--max-age-days", type=non_negative_int, default=None, metavar="N",
                   help="refuse a snapshot whose score date is more than N days before --today (default: the "
                        "snapshot's valid_until, score date + serving_max_age_days, 2 by default)")
    p.add_argument("--allow-stale", action="store_true",
                   help="serve the snapshot even when it is older than that (say so in the incident log)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The flags of `jobs.run.options.RunOptions`."""
    p.add_argument("--force", action="store_true",
                   help="publish again even if the same inputs, config, code and method were already published")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="allocation solver: exact (HiGHS), dual (ridge-regularised dual ascent polished to the "
                        "exact optimum), auto (exact below 5,000 eligible tracks per problem, dual above) "
                        f"(default {DEFAULT_METHOD})")
    p.add_argument("--skip-gate", action="append", default=[], choices=list(GATES), metavar="NAME",
                   help="publish even if this validation gate fails (repeatable), for an engineer who has "
                        "checked it by hand; it is still measured and recorded as skipped. Gates: "
                        + ", ".join(GATES))
