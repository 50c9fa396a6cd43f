"""A repeated event_id counts once across days, not only within its day.

Within a day, the aggregation keeps the first row of each event_id (exact
string comparison, per shard: duplicates share their track, so they share a
shard). Across days it drops an event whose id was seen on one of the
`dedupe_lookback_days` days before (default 1: an upstream retry re-sends
yesterday's events into today's partition).

Memory stays bounded by shard sizes, not by days: each aggregation shard of a
day writes the 64-bit hashes (`pipelines.arrays.stable_hash`) of the event ids
it saw, with the hash of each event's track, to one small Arrow file
(`part-SSSSS-of-NNNNN.arrow`, 16 bytes an event) in the day's build folder. A
later day's shard s (of n) reads only the files of the look-back days whose
tracks can fall in s (file t of m when s = t mod gcd(n, m); with equal shard
counts, the usual case, exactly one file a day), one file at a time, and keeps
the hashes of its own tracks. A 64-bit hash collision would drop one event:
about 1 in 10^6 for two 6-million-event days.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines import arrays, storage

_FILE = re.compile(r"part-(\d{5})-of-(\d{5})\.arrow$")
SEEN_SCHEMA = pa.schema([("event", pa.uint64()), ("track", pa.uint64())])


def seen_file(folder: str, shard: int, shards: int) -> str:
    return storage.join(folder, f"part-{shard:05d}-of-{shards:05d}.arrow")


def parse_seen_file(uri: str) -> tuple[int, int] | None:
    """(shard, shards) of a seen-ids file, or None for another file."""
    m = _FILE.search(uri)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        return None
    return int(m.group(1)), int(m.group(2))


def track_hashes(column) -> np.ndarray:
    """The stable hash of each row's track id (each distinct id hashed once),
    the same value `arrays.stable_shard` reduces modulo the shard count."""
    idx, uniques = arrays.codes(column)
    return arrays.stable_hash(uniques)[idx] if len(idx) else np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class LookBack:
    """What one day's aggregation needs for the cross-day dedupe."""
    write_dir: str                       # where this day's shards write the ids they saw
    shards: int                          # this day's shard count
    read_dirs: tuple[str, ...] = field(default_factory=tuple)  # the look-back days' folders of seen ids

    def drop_seen(self, shard: int, table: pa.Table) -> tuple[pa.Table, int]:
        """Record the ids of `table` (one shard's events, each id once) as seen
        on this day, then drop the rows whose id a look-back day saw. Returns
        (rows kept, rows dropped)."""
        events = arrays.stable_hash(table.column("event_id"))
        write_seen(seen_file(self.write_dir, shard, self.shards), events, track_hashes(table.column("track_id")))
        seen = self.seen_before(shard)
        if not len(seen) or not table.num_rows:
            return table, 0
        repeat = np.isin(events, seen)
        dropped = int(repeat.sum())
        return (table.filter(pa.array(~repeat)) if dropped else table), dropped

    def seen_before(self, shard: int) -> np.ndarray:
        """Sorted unique hashes of the ids the look-back days saw on this shard's tracks."""
        parts = []
        for folder in self.read_dirs:
            for uri in storage.list_files(folder, ".arrow"):
                named = parse_seen_file(uri)
                if named is None:
                    continue
                theirs, their_shards = named
                if (shard - theirs) % math.gcd(self.shards, their_shards):
                    continue  # none of that file's tracks can be in this shard
                with storage.open_input(uri) as f:
                    t = pa.ipc.open_file(f).read_all()
                track = t.column("track").to_numpy()
                parts.append(t.column("event").to_numpy()[track % np.uint64(self.shards) == np.uint64(shard)])
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)


def write_seen(uri: str, events: np.ndarray, tracks: np.ndarray) -> None:
    """One shard's seen ids (a retried bundle rewrites the same file)."""
    table = pa.table({"event": pa.array(events, pa.uint64()), "track": pa.array(tracks, pa.uint64())},
                     schema=SEEN_SCHEMA)
    with storage.open_output(uri) as sink, pa.ipc.new_file(sink, SEEN_SCHEMA) as w:
        w.write_table(table)
