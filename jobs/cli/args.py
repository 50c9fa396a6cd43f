"""Every flag more than one command takes, declared once, and the argument
types of the command line."""
from __future__ import annotations

import argparse
import datetime as dt
import difflib

from apache_beam.options import pipeline_options
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


# ---------------------------------------------------- parsers and leftovers ---
def sub_parsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:  # noqa: SLF001 - argparse offers no public way to walk its sub-parsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def leaf_parsers(root: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below the root (commands and their actions)."""
    out = []
    for p in sub_parsers(root).values():
        out += [p] + leaf_parsers(p)
    return out


def leaf_parser(root: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the command (and action) that `args` were parsed for."""
    p = root
    for name in (getattr(args, "command", None), getattr(args, "action", None)):
        subs = sub_parsers(p)
        if name in subs:
            p = subs[name]
    return p


def _options(p: argparse.ArgumentParser) -> list[str]:
    return [s for action in p._actions for s in action.option_strings if s.startswith("--")]  # noqa: SLF001


def _suggest(name: str, candidates: list[str]) -> str:
    norm = {c.replace("_", "-"): c for c in candidates}
    close = difflib.get_close_matches(name.replace("_", "-"), list(norm), n=1, cutoff=0.6)
    return f" (did you mean {norm[close[0]]}?)" if close else ""


def unrecognized(rest: list[str], p: argparse.ArgumentParser) -> str:
    first = next((x for x in rest if x.startswith("--")), None)
    hint = _suggest(first.split("=", 1)[0], _options(p)) if first else ""
    return f"unrecognized arguments: {' '.join(rest)}{hint}"


_BEAM_PARSER = None


def beam_parser():
    """A parser of every pipeline option Apache Beam itself declares (all
    `PipelineOptions` classes, as `PipelineOptions.get_all_options` builds it)."""
    global _BEAM_PARSER
    if _BEAM_PARSER is None:
        parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)  # noqa: SLF001
        seen = set()
        for cls in pipeline_options.PipelineOptions.__subclasses__():
            if str(cls) not in seen:
                seen.add(str(cls))
                cls._add_argparse_args(parser)  # noqa: SLF001
        _BEAM_PARSER = parser
    return _BEAM_PARSER


def check_beam_args(rest: list[str], p: argparse.ArgumentParser) -> str | None:
    """What is wrong with the arguments a command left for Apache Beam, or None.

    Beam would log "Unparseable argument" for an option it does not know and go
    on, so a typo (`--froce`) would silently run without the flag: every
    leftover argument must be one of Beam's own pipeline options."""
    parser = beam_parser()
    try:
        _, unknown = parser.parse_known_args(rest)
    except SystemExit:  # a Beam option with a bad value: Beam's parser has printed why
        return f"invalid Apache Beam pipeline option in: {' '.join(rest)}"
    if not unknown:
        return None
    first = unknown[0]
    if first.startswith("-"):
        name = first.split("=", 1)[0]
        hint = _suggest(name, _options(p) + _options(parser))
        return (f"unknown option {name}{hint}: it is neither an option of `{p.prog}` nor an Apache Beam "
                "pipeline option (`--help` lists the command's options)")
    return f"unexpected argument {first!r} (`--help` lists the command's options)"
