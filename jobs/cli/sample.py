"""`oasis sample`: generate a realistic synthetic world in the input contract,
with its planted truth (`jobs.sample.world`)."""
from __future__ import annotations

import argparse
import datetime as dt
import os

from jobs.cli import args as a
from jobs.sample.generate import generate_world
from jobs.sample.world import MARKETS


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate a realistic synthetic world in the input contract")
    _add_arguments(p)
    p.set_defaults(func=main, beam=False)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="local folder to write the world into: new or empty, or one an earlier `oasis sample` "
                             "wrote (the same arguments there: nothing to do; others need --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the world an earlier `oasis sample` wrote in --out (only its own files are "
                             "deleted; a folder holding other files is always refused)")
    parser.add_argument("--days", type=a.int_in(1, 3660), default=35, help="number of days (default 35)")
    parser.add_argument("--tracks", type=a.int_in(10, 100_000), default=400,
                        help="campaign tracks in the catalogue (default 400)")
    parser.add_argument("--events-per-day", type=a.int_in(0, 100_000_000), default=40000,
                        help="engagement rows per day (default 40000)")
    parser.add_argument("--seed", type=a.int_in(0, 2**32 - 1), default=7, help="random seed (default 7)")
    parser.add_argument("--end-date", type=a.date_arg, default=dt.date(2026, 11, 24),
                        help="last day, YYYY-MM-DD (default 2026-11-24)")
    parser.add_argument("--bad-row-share", type=a.float_in(0.0, 0.5, hi_open=True), default=0.002,
                        help="share of contract-breaking engagement rows (default 0.002)")
    parser.add_argument("--markets", type=a.int_in(1, len(MARKETS)), default=6,
                        help=f"number of markets, 1-{len(MARKETS)} (default 6)")
    parser.add_argument("--holdout", action="store_true",
                        help="the promotion holdout (the default config's salt and share): a holdout flag on every "
                             "play, no promoted play for a holdout listener, and serving's exposure log "
                             "(exposures/, treated and ghost); without it the logs predate the holdout")


def main(args, _beam_args) -> int:
    summary = generate_world(args.out, days=args.days, tracks=args.tracks, events_per_day=args.events_per_day,
                             seed=args.seed, end_date=args.end_date, bad_row_share=args.bad_row_share,
                             markets=args.markets, progress=True, overwrite=args.overwrite, holdout=args.holdout)
    if summary.get("reused"):
        print(f"{args.out} already holds this sample world ({summary.get('first_day')}..{summary.get('last_day')}, "
              f"files intact); nothing to do (--overwrite writes it again)")
        return 0
    print(f"sample world {summary['first_day']}..{summary['last_day']} written to {summary['out']} "
          f"in {summary['seconds']}s")
    print(f"  markets {', '.join(summary['markets'])}; {summary['campaign_tracks']} campaign tracks "
          f"({summary['disliked_tracks']} disliked, {summary['young_tracks']} released in the last 30 days), "
          f"{summary['tail_tracks']:,} tail tracks, {summary['artists']} artists, {summary['licensors']} licensors, "
          f"{summary['campaigns']} campaigns")
    print(f"  engagement {summary['engagement_rows']:,} rows ({summary['enrolled_play_share']:.0%} on enrolled "
          f"tracks, {summary['promoted_plays']:,} promoted, {summary['duplicate_events']:,} resent, "
          f"{summary['bad_rows']:,} bad); enrollments {summary['enrollment_rows']:,} export rows"
          + (f"; exposures {summary['exposures']:,} ({summary['ghost_exposures']:,} ghost)" if args.holdout else ""))
    print(f"  truth: {os.path.join(summary['out'], 'truth', 'tracks.parquet')}; last day in "
          f"{os.path.join(summary['out'], 'LAST_DAY')}")
    return 0
