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
  ``truth/`` (tracks, weekday factors, holidays and the expected plays of each
  market, surface and day);
* promoted plays (with their campaign id) only for tracks whose campaign is
  active in that market on an enrolled promotion surface, on top of their
  organic plays; ~5% of the campaign tracks have promoted plays skipped 0.15
  more often than their organic ones;
* supply (`jobs.sample.supply`): weekday factors per (market, surface) (up
  to +-15%), post-release decay (30-180 days after release), one market-wide
  holiday spike (+40%, 9 days before the end), and first-time enrollees at
  each month start inside the world (12% of the campaign tracks, half of them
  released in the three weeks before; never in an export before), so
  `--events-per-day` is the organic plays of an average day;
* with `holdout=True` (`oasis sample --holdout`), the promotion holdout of
  `pipelines.holdout` with the default config's salt and share: every play
  carries its listener's `holdout` flag, a holdout listener's would-be
  promoted play stays organic, and serving's exposure log (`exposures/`) has a
  `treated` row per promoted play and a `ghost` row per play held back
  (the campaign lift here is not planted as a known figure;
  `jobs.simulate.lift_world` plants lifts). Without it the
  engagement files have no holdout column, as before the holdout existed;
* resent duplicate events (~0.5%, exact copies arriving a bit later) and
  contract-breaking rows at ``--bad-row-share``: unknown surface, negative
  ms_played, malformed market (lower case or alpha-3), event_ts days away from
  the partition day, empty track_id.

Layout written under ``out``::

    enrollments/dt=YYYY-MM-DD/part-00000.parquet   (one per day: the full export)
    engagement/dt=YYYY-MM-DD/part-NNNNN.parquet    (<= 1M rows a file, 128k row groups)
    exposures/dt=YYYY-MM-DD/part-00000.parquet     (with holdout=True)
    truth/tracks.parquet                           (per (track, market, surface): planted rates, decay, ...)
    truth/weekday.parquet                          (per (market, surface, weekday): the factor)
    truth/holidays.parquet                         (per (market, day): the lift)
    truth/surface_days.parquet                     (per (day, market, surface): expected plays, all tracks)
    LAST_DAY
"""

import datetime as dt
import json
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
from jobs.sample.supply import SupplyParams
from jobs.sample.world import (DICTIONARY_COLUMNS, MARKETS, MAX_ROWS_PER_FILE, ROW_GROUP_SIZE, build_enrollments,
                               build_world, export_for_day, surface_days_table, truth_tables)
from pipelines.errors import OasisError, UsageError

EXPOSURE_DICTIONARY_COLUMNS = ["user_id", "track_id", "campaign_id", "market", "surface", "arm"]


class SampleError(UsageError, ValueError):
    """Arguments that cannot make a world; the message names the argument."""


class FolderInUse(OasisError):
    """The output folder holds something `oasis sample` will not overwrite."""


SAMPLE_RECORD = "_SAMPLE.json"  # what `oasis sample` wrote here and with which arguments; written as it goes


def _write(table: pa.Table, path: str, dictionary: list[str] | bool) -> None:
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=1,
                   use_dictionary=dictionary, write_statistics=True)
    os.replace(tmp, path)


def _existing_files(out: str) -> list[str]:
    """Every file under `out`, relative, "/"-separated."""
    found = []
    for base, _, names in os.walk(out):
        for n in names:
            found.append(os.path.relpath(os.path.join(base, n), out).replace(os.sep, "/"))
    return sorted(found)


def read_record(out: str) -> dict | None:
    try:
        with open(os.path.join(out, SAMPLE_RECORD)) as f:
            doc = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), list) else None


class _Record:
    """`_SAMPLE.json`: the arguments and every file this world is made of. Each
    file is listed before it is written, so even an interrupted run's files are
    known to be ours; `complete` turns true when the last file is written."""

    def __init__(self, out: str, arguments: dict):
        self.path = os.path.join(out, SAMPLE_RECORD)
        self.doc = {"arguments": arguments, "complete": False, "files": []}

    def add(self, *relative: str) -> None:
        self.doc["files"] += [r for r in relative if r not in self.doc["files"]]
        self.save()

    def finish(self, summary: dict, sizes: dict[str, int]) -> None:
        self.doc.update(complete=True, summary=summary, sizes=sizes)
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def _intact(out: str, record: dict) -> bool:
    sizes = record.get("sizes") or {}
    return bool(record.get("complete")) and all(
        os.path.isfile(os.path.join(out, r)) and os.path.getsize(os.path.join(out, r)) == sizes.get(r)
        for r in record["files"])


def prepare_folder(out: str, arguments: dict, overwrite: bool) -> dict | None:
    """Make `out` ready for a world of `arguments`. Returns the summary of the
    same world already there, intact (nothing to do), else None.

    Refuses a folder that is not empty unless `overwrite`; even then it deletes
    only files an earlier `oasis sample` listed in its record, and refuses a
    folder holding any file it did not write."""
    if not os.path.isdir(out):
        if os.path.exists(out):
            raise FolderInUse(f"{out} exists and is not a folder")
        return None
    existing = [f for f in _existing_files(out) if f not in (SAMPLE_RECORD, SAMPLE_RECORD + ".tmp")]
    record = read_record(out)
    if record is None and not existing:
        return None
    if record is not None and record.get("arguments") == arguments and _intact(out, record):
        return dict(record.get("summary") or {}, out=out, reused=True)
    ours = set(record["files"]) if record else set()
    foreign = [f for f in existing if f not in ours and f.removesuffix(".tmp") not in ours]
    if foreign:
        raise FolderInUse(
            f"{out} holds {len(foreign)} file(s) that `oasis sample` did not write (e.g. {', '.join(foreign[:3])}); "
            "it never deletes or mixes into files it did not write: choose an empty or new folder"
            + (" (a world written by an older `oasis sample` has no record: remove the folder, e.g. `make clean`)"
               if record is None else ""))
    if not overwrite:
        what = ("an incomplete world (an interrupted `oasis sample`)" if not record.get("complete")
                else f"another sample world ({_differences(record.get('arguments') or {}, arguments)})"
                if record.get("arguments") != arguments else "a sample world whose files changed since")
        raise FolderInUse(f"{out} is not empty: it holds {what}; pass --overwrite to replace it (only the files "
                          f"`oasis sample` wrote there are deleted), or choose another folder")
    for rel in sorted(ours, reverse=True):
        for f in (os.path.join(out, rel), os.path.join(out, rel) + ".tmp"):
            if os.path.isfile(f):
                os.remove(f)
    for base, dirs, files in sorted(os.walk(out), reverse=True):  # folders the world's files leave empty
        if base != out and not os.listdir(base):
            os.rmdir(base)
    os.remove(os.path.join(out, SAMPLE_RECORD))
    return None


def _differences(old: dict, new: dict) -> str:
    diff = [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(diff) or "other arguments"


def generate_world(out: str, *, days: int, tracks: int, events_per_day: int, seed: int,
                   end_date: dt.date, bad_row_share: float = 0.002, markets: int = 6,
                   progress: bool = True, overwrite: bool = False, supply: SupplyParams = SupplyParams(),
                   holdout: bool = False) -> dict:
    """Write a synthetic world of `days` days ending on `end_date` under the local folder `out`.

    A folder already holding the same world, intact, is left as it is (the
    summary says `reused`); any other non-empty folder is refused unless
    `overwrite` (see `prepare_folder`: files sample did not write are never
    deleted). `supply`: the planted supply model (weekday factors, decay, ...);
    `holdout`: the promotion holdout and serving's exposure log (above)."""
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
    arguments = {"days": days, "tracks": tracks, "events_per_day": events_per_day, "seed": seed,
                 "end_date": end_date.isoformat(), "bad_row_share": bad_row_share, "markets": markets}
    if supply != SupplyParams():  # a planted supply model of a test's own
        arguments["supply"] = repr(supply)
    if holdout:
        arguments["holdout"] = True
    same = prepare_folder(out, arguments, overwrite)
    if same is not None:
        return same
    os.makedirs(out, exist_ok=True)
    record = _Record(out, arguments)
    w = build_world(seed=seed, tracks=tracks, events_per_day=events_per_day, markets=markets, end_date=end_date,
                    first_day=first_day, supply=supply)
    e = build_enrollments(w, first_day, end_date)
    os.makedirs(os.path.join(out, "truth"), exist_ok=True)
    for name, table in truth_tables(w).items():
        record.add(f"truth/{name}.parquet")
        _write(table, os.path.join(out, "truth", f"{name}.parquet"), True)
    expected = []

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
            n_files = max(1, math.ceil(events.num_rows / MAX_ROWS_PER_FILE))
            record.add(f"enrollments/dt={d.isoformat()}/part-00000.parquet",
                       *(f"engagement/dt={d.isoformat()}/part-{j:05d}.parquet" for j in range(n_files)))
            folder = os.path.join(out, "enrollments", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            pending.append(pool.submit(_write, export, os.path.join(folder, "part-00000.parquet"), True))
            folder = os.path.join(out, "engagement", f"dt={d.isoformat()}")
            os.makedirs(folder, exist_ok=True)
            bounds = np.linspace(0, events.num_rows, n_files + 1).round().astype(int)
            for j in range(n_files):
                part = events.slice(bounds[j], bounds[j + 1] - bounds[j])
                pending.append(pool.submit(_write, part, os.path.join(folder, f"part-{j:05d}.parquet"),
                                           DICTIONARY_COLUMNS))
            if exposures is not None:
                record.add(f"exposures/dt={d.isoformat()}/part-00000.parquet")
                folder = os.path.join(out, "exposures", f"dt={d.isoformat()}")
                os.makedirs(folder, exist_ok=True)
                pending.append(pool.submit(_write, exposures, os.path.join(folder, "part-00000.parquet"),
                                           EXPOSURE_DICTIONARY_COLUMNS))
            enrollment_rows += export.num_rows
            expected.append(stats["expected"])
            for k in totals:
                totals[k] += stats[k]
            if progress:
                print(f"sample: {d.isoformat()} ({i + 1}/{days})  engagement {events.num_rows:,} rows in "
                      f"{n_files} file(s), {stats['duplicates']:,} resent, {stats['bad_rows']:,} bad; "
                      f"enrollments {export.num_rows:,} rows  [{time.monotonic() - t_day:.1f}s]",
                      file=sys.stderr, flush=True)
        for f in pending:
            f.result()
    record.add("truth/surface_days.parquet")
    _write(surface_days_table(w, first_day, expected), os.path.join(out, "truth", "surface_days.parquet"), True)
    record.add("LAST_DAY")
    with open(os.path.join(out, "LAST_DAY"), "w") as fh:
        fh.write(end_date.isoformat() + "\n")

    summary = {
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
    record.finish(summary, {r: os.path.getsize(os.path.join(out, r)) for r in record.doc["files"]})
    return summary
