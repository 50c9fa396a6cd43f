"""A synthetic but realistic world of inputs in the input contract (`oasis sample`).

The world is one catalogue of *campaign tracks* (``--tracks``) that licensors
enroll in monthly campaigns, plus a long tail of tracks that are never
enrolled. Everything is drawn from numpy Generators seeded by ``--seed`` (and
the day or month being generated), column-wise, so the same arguments give
byte-identical files and 6M events a day take a few seconds.

What is planted, so tests and analysts can check the pipeline against it:

* markets of very different sizes, each with its time zone (diurnal traffic);
* licensors of very different sizes (Zipf over artists), artists belonging to
  one licensor, each track with one artist; Zipf-like track popularity;
* each campaign track enrolled in a few markets (weighted by market size);
* monthly campaigns (one per licensor and month, 1st to last day) whose export
  holds the ended previous month, the current month and, during the last week
  of a month, the next month's campaigns already created;
* enrollment status history: mostly active, some paused, some cancelled, and
  superseded rows (the same key twice or three times; the latest wins and is
  sometimes active, sometimes paused or cancelled);
* tracks released in the last 30 days (no plays before their release day);
* per (track, market, surface) skip and save probabilities around a
  (market, surface) baseline; ~8% of the campaign tracks are *disliked*: their
  skip probability is at least 0.25 above the baseline. The truth is written to
  ``truth/tracks.parquet``;
* promoted plays (with their campaign id) only for tracks whose campaign is
  active in that market on an enrolled promotion surface;
* with `holdout=True` (`oasis sample --holdout`), the promotion holdout of
  `pipelines.holdout` with the default config's salt and share: every play
  carries its listener's `holdout` flag, a holdout listener's would-be
  promoted play stays organic, and serving's exposure log (`exposures/`) has a
  `treated` row per promoted play and a `ghost` row per play held back
  (promotion here relabels plays that would have happened anyway, so every
  campaign's true lift is 0; `jobs.simulate` plants lifts). Without it the
  engagement files have no holdout column, as before the holdout existed;
* resent duplicate events (~0.5%, exact copies arriving a bit later) and
  contract-breaking rows at ``--bad-row-share``: unknown surface, negative
  ms_played, malformed market (lower case or alpha-3), event_ts days away from
  the partition day, empty track_id.

Layout written under ``out``::

    enrollments/dt=YYYY-MM-DD/part-00000.parquet   (one per day: the full export)
    engagement/dt=YYYY-MM-DD/part-NNNNN.parquet    (<= 1M rows a file, 128k row groups)
    exposures/dt=YYYY-MM-DD/part-00000.parquet     (with holdout=True)
    truth/tracks.parquet
    LAST_DAY
"""

import datetime as dt
import glob
import math
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.sample.draws import EPOCH, retain_freed_memory
from jobs.sample.events import events_for_day
from jobs.sample.world import (DICTIONARY_COLUMNS, MARKETS, MAX_ROWS_PER_FILE, ROW_GROUP_SIZE, build_enrollments,
                               build_world, export_for_day, truth_table)

EXPOSURE_DICTIONARY_COLUMNS = ["user_id", "track_id", "campaign_id", "market", "surface", "arm"]
from pipelines.errors import UsageError



class SampleError(UsageError, ValueError):
    """Arguments that cannot make a world; the message names the argument."""

def _write(table: pa.Table, path: str, dictionary: list[str] | bool) -> None:
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=1,
                   use_dictionary=dictionary, write_statistics=True)
    os.replace(tmp, path)


def _clear(out: str) -> None:
    """Remove the files an earlier run wrote here (only our own layout), so no stale part survives."""
    for pattern in ("enrollments/dt=*/part-*.parquet", "engagement/dt=*/part-*.parquet",
                    "exposures/dt=*/part-*.parquet", "enrollments/dt=*/part-*.parquet.tmp",
                    "engagement/dt=*/part-*.parquet.tmp", "exposures/dt=*/part-*.parquet.tmp",
                    "truth/tracks.parquet", "LAST_DAY"):
        for f in glob.glob(os.path.join(out, pattern)):
            os.remove(f)
    for pattern in ("enrollments/dt=*", "engagement/dt=*", "exposures/dt=*"):
        for folder in glob.glob(os.path.join(out, pattern)):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


def generate_world(out: str, *, days: int, tracks: int, events_per_day: int, seed: int,
                   end_date: dt.date, bad_row_share: float = 0.002, markets: int = 6,
                   progress: bool = True, holdout: bool = False) -> dict:
    """Write a synthetic world of `days` days ending on `end_date` under the local folder `out`."""
    if days < 1:
        raise SampleError("days must be >= 1")
    if not 10 <= tracks <= 100_000:
        raise SampleError("tracks must be between 10 and 100000")
    if not 0 <= events_per_day <= 100_000_000:
        raise SampleError("events_per_day must be between 0 and 100000000")
    if not 1 <= markets <= len(MARKETS):
        raise SampleError(f"markets must be between 1 and {len(MARKETS)}")
    if not 0.0 <= bad_row_share < 0.5:
        raise SampleError("bad_row_share must be in [0, 0.5)")
    if seed < 0:
        raise SampleError("seed must be >= 0")
    started = time.monotonic()
    if events_per_day >= 500_000:
        retain_freed_memory()
    first_day = end_date - dt.timedelta(days=days - 1)
    os.makedirs(out, exist_ok=True)
    _clear(out)
    w = build_world(seed=seed, tracks=tracks, events_per_day=events_per_day, markets=markets, end_date=end_date)
    e = build_enrollments(w, first_day, end_date)
    os.makedirs(os.path.join(out, "truth"), exist_ok=True)
    _write(truth_table(w), os.path.join(out, "truth", "tracks.parquet"), True)

    totals = {"events": 0, "duplicates": 0, "bad_rows": 0, "promoted": 0, "enrolled_plays": 0, "exposures": 0,
              "ghost_exposures": 0}
    enrollment_rows = 0
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(days):
            t_day = time.monotonic()
            d = first_day + dt.timedelta(days=i)
            export = export_for_day(e, d)
            events, stats, exposures = events_for_day(w, e, d, events_per_day, bad_row_share, holdout)
            for f in pending:            # at most one day being written while the next is generated
                f.result()
            pending = []
            folder = os.path.join(out, "enrollments", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            pending.append(pool.submit(_write, export, os.path.join(folder, "part-00000.parquet"), True))
            folder = os.path.join(out, "engagement", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            n_files = max(1, math.ceil(events.num_rows / MAX_ROWS_PER_FILE))
            bounds = np.linspace(0, events.num_rows, n_files + 1).round().astype(int)
            for j in range(n_files):
                part = events.slice(bounds[j], bounds[j + 1] - bounds[j])
                pending.append(pool.submit(_write, part, os.path.join(folder, f"part-{j:05d}.parquet"),
                                           DICTIONARY_COLUMNS))
            if exposures is not None:
                folder = os.path.join(out, "exposures", f"dt={d.isoformat()}")
                os.makedirs(folder, exist_ok=True)
                pending.append(pool.submit(_write, exposures, os.path.join(folder, "part-00000.parquet"),
                                           EXPOSURE_DICTIONARY_COLUMNS))
            enrollment_rows += export.num_rows
            for k in totals:
                totals[k] += stats[k]
            if progress:
                print(f"sample: {d.isoformat()} ({i + 1}/{days})  engagement {events.num_rows:,} rows in "
                      f"{n_files} file(s), {stats['duplicates']:,} resent, {stats['bad_rows']:,} bad; "
                      f"enrollments {export.num_rows:,} rows  [{time.monotonic() - t_day:.1f}s]",
                      file=sys.stderr, flush=True)
        for f in pending:
            f.result()
    with open(os.path.join(out, "LAST_DAY"), "w") as fh:
        fh.write(end_date.isoformat() + "\n")

    return {
        "out": out,
        "first_day": first_day.isoformat(),
        "last_day": end_date.isoformat(),
        "days": days,
        "markets": list(w.codes),
        "campaign_tracks": tracks,
        "tail_tracks": len(w.track_dict) - 1 - tracks,
        "artists": len(w.artist_ids),
        "licensors": len(w.licensor_ids),
        "campaigns": len(e.campaign_ids),
        "enrolled_pairs": int(len(w.pair_track)),
        "disliked_tracks": int(w.disliked.sum()),
        "young_tracks": int(((end_date - EPOCH).days - w.release_days < 30).sum()),
        "enrollment_rows": enrollment_rows,
        "engagement_rows": totals["events"],
        "duplicate_events": totals["duplicates"],
        "bad_rows": totals["bad_rows"],
        "promoted_plays": totals["promoted"],
        "exposures": totals["exposures"],
        "ghost_exposures": totals["ghost_exposures"],
        "enrolled_play_share": round(totals["enrolled_plays"] / max(totals["events"], 1), 4),
        "seconds": round(time.monotonic() - started, 2),
    }
