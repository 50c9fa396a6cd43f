"""A repeated event_id counts once across days (README: what "counts once"
covers), checked on planted truth: events of 2026-11-23 re-sent into the
2026-11-24 partition (as an upstream retry does) must leave the day's
aggregates, and so the published scores, exactly as they were without them.
On the previous main they were counted a second time."""
from __future__ import annotations

import datetime as dt
import glob
import io
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from pipelines import contract
from pipelines.config import Config
from schemas import DAILY_AGGREGATES, PROMOTION_SURFACES, SURFACE_TOTALS
from tests.support import worlds
from tests.support.lifecycle import LOGS1, LOGS2, two_snapshots


def oasis(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def stored(out: str, day: str, what: str, table) -> pa.Table:
    folder = os.path.join(out, "aggregates", f"dt={day}")
    build = open(os.path.join(folder, "_SUCCESS")).read().strip()
    files = sorted(glob.glob(os.path.join(folder, build, what, "*.parquet")))
    t = pa.concat_tables([pq.read_table(f).cast(table.arrow()) for f in files])
    return t.sort_by([(k, "ascending") for k in table.key])


@pytest.fixture(scope="module")
def resent(tmp_path_factory):
    """The shared world plus one file in the 11-24 partition holding copies of
    11-23's promotion-surface events from its last 6 hours (within the
    partition's time slack, so the contract lets them in)."""
    two = two_snapshots(tmp_path_factory)
    root = tmp_path_factory.mktemp("resent")
    world = shutil.copytree(two.world, str(root / "world"))
    day_before = pa.concat_tables([pq.read_table(f) for f in glob.glob(f"{world}/engagement/dt={LOGS1}/*.parquet")])
    late = dt.datetime.fromisoformat(f"{LOGS1}T18:30:00+00:00")
    keep = pc.and_(pc.is_in(day_before.column("surface"), pa.array(PROMOTION_SURFACES)),
                   pc.greater_equal(day_before.column("event_ts"), pa.scalar(late, day_before.column("event_ts").type)))
    copies = day_before.filter(keep)
    pq.write_table(copies, f"{world}/engagement/dt={LOGS2}/part-resent.parquet")
    # the copies that reach the aggregation: those keeping the contract in the 11-24 partition, each id once
    reasons = contract.check_engagement(copies, dt.date.fromisoformat(LOGS2), Config().event_ts_slack_hours)
    distinct = len(set(copies.filter(pc.is_null(reasons)).column("event_id").to_pylist()))
    out = two.copy(str(root / "out"))
    code, text, err = oasis("run", "--date", LOGS2, "--input", world, "--output", out)
    return two, out, distinct, code, err


def test_events_resent_into_the_next_day_count_once(resent):
    two, out, n, code, err = resent
    assert code == 0, err
    assert n > 50  # enough re-sent events that counting them twice would show
    new = [worlds.manifest(d) for d in worlds.snapshot_dirs(out)
           if worlds.manifest(d)["snapshot_id"] not in (two.s1["snapshot_id"], two.s2["snapshot_id"])]
    (m,) = new
    assert m["inputs"]["stored_days"][-1] == LOGS1 and m["inputs"]["built_days"] == [LOGS2]
    assert m["metrics"][f"repeats_from_earlier_days/{LOGS2}"] == n
    # the day's aggregates and totals are exactly those of the day without the copies
    for what, table in (("tracks", DAILY_AGGREGATES), ("totals", SURFACE_TOTALS)):
        assert stored(out, LOGS2, what, table).equals(stored(two.out, LOGS2, what, table)), what
    # and so the published tables are the same content as S2's
    for name, t in m["tables"].items():
        assert t["content_sha256"] == two.s2["tables"][name]["content_sha256"], name


def test_every_build_keeps_the_hashed_ids_it_saw(resent):
    """What the next day's dedupe reads: per shard, 16 bytes an event (the
    hashes of its id and track), so memory and disk stay bounded by shards."""
    two, out, _, _, _ = resent
    (m,) = [worlds.manifest(d) for d in worlds.snapshot_dirs(out)
            if worlds.manifest(d)["snapshot_id"] not in (two.s1["snapshot_id"], two.s2["snapshot_id"])]
    folder = os.path.join(out, "aggregates", f"dt={LOGS2}")
    build = open(os.path.join(folder, "_SUCCESS")).read().strip()
    files = glob.glob(os.path.join(folder, build, "event_ids", "part-*-of-*.arrow"))
    tables = [pa.ipc.open_file(f).read_all() for f in files]
    assert files and all(t.schema.field(c).type == pa.uint64() for t in tables for c in ("event", "track"))
    # every distinct id the day's shards saw (the re-sent ones too, so a third copy on the next day drops)
    metrics = m["metrics"]
    within_day = metrics[f"duplicates_removed/{LOGS2}"] - metrics[f"repeats_from_earlier_days/{LOGS2}"]
    assert sum(t.num_rows for t in tables) == metrics["rows_spilled"] - within_day
    assert sum(os.path.getsize(f) for f in files) <= 16 * sum(t.num_rows for t in tables) + 1024 * len(files)
