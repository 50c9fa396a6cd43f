"""Every flag more than one command takes, declared once, and the argument
types of the command line."""
from __future__ import annotations

import argparse
import datetime as dt
import math

from jobs.gates.checks import GATES
from jobs.run.options import DEFAULT_METHOD
from pipelines.allocation.solve import METHODS


# ------------------------------------------------------------------- types ---
def date_arg(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {s!r}") from None


# Every numeric option has a range: NaN, infinity and values no one means
# (a million worker processes, a negative seed) are usage errors with the
# range in the message, never a crash or a hang further on.
def int_in(lo: int, hi: int):
    """An argument type: a whole number in [lo, hi]."""
    def parse(s: str) -> int:
        n = _int(s)
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be a whole number in [{lo:,}, {hi:,}], got {s[:30]!r}")
        return n
    parse.__name__ = "whole number"  # what argparse calls the type in its messages
    return parse


def float_in(lo: float, hi: float, *, hi_open: bool = False):
    """An argument type: a finite number in [lo, hi] (or [lo, hi) when hi_open)."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s[:30]!r}") from None
        ok = math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number in [{lo:g}, {hi:g}{')' if hi_open else ']'}, "
                                             f"got {s[:30]!r}")
        return v
    parse.__name__ = "number"
    return parse


positive_int = int_in(1, 10**9)
non_negative_int = int_in(0, 10**9)
non_negative_float = float_in(0.0, 1e9)
WORKERS = int_in(1, 64)          # processes; each runs a Beam pipeline (~0.5-1 GB)


def _int(s: str) -> int:
    try:
        if len(s) > 30:
            raise ValueError
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {s[:30]!r}") from None


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


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The flags of `jobs.run.options.RunOptions`."""
    p.add_argument("--force", action="store_true",
                   help="publish again even if the same inputs, config, code and method were already published "
                        "(not what a rollback pulled: see --republish)")
    p.add_argument("--republish", action="store_true",
                   help="serve again a snapshot that `oasis snapshots rollback` pulled (same inputs, config, code "
                        "and method); without it such a run publishes nothing and says so")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="allocation solver: exact (HiGHS), dual (ridge-regularised dual ascent polished to the "
                        "exact optimum), auto (exact below 5,000 eligible tracks per problem, dual above) "
                        f"(default {DEFAULT_METHOD})")
    p.add_argument("--skip-gate", action="append", default=[], choices=list(GATES), metavar="NAME",
                   help="publish even if this validation gate fails (repeatable), for an engineer who has "
                        "checked it by hand; it is still measured and recorded as skipped. Gates: "
                        + ", ".join(GATES))
