"""Property tests: contract-breaking engagement rows never reach the aggregates
(and so never the scores), and every one of them is dead-lettered with a reason.

Random mixes of good rows and rows breaking one or several rules of docs/design.md §3
go through the same pure functions the Beam pipeline runs, in the same order:
`check_engagement` -> `split_good_bad` -> `SpillShardsFn` -> `AggregateShardFn`.
An independent per-row oracle of the contract (written here from the design,
not from the implementation) decides which rows are bad; the aggregates must
equal the aggregates of the oracle-good rows alone.

The last test does the same end to end: the real CLI on a sample world whose
engagement file gets contract-breaking rows injected (below the 1% ceiling).
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.beam.transforms import AggregateShardFn, SpillShardsFn
from pipelines.contract import check_engagement, split_good_bad
from schemas import ALL_SURFACES, DEAD_LETTERS, ENGAGEMENT, PROMOTION_SURFACES

UTC = dt.timezone.utc
DAY = dt.date(2024, 5, 10)
SLACK_H = 6.0
DAY_START = dt.datetime(2024, 5, 10, tzinfo=UTC)
LO = DAY_START - dt.timedelta(hours=SLACK_H)
HI = DAY_START + dt.timedelta(days=1, hours=SLACK_H)
NULLABLE = pa.schema([pa.field(f.name, f.type, nullable=True) for f in ENGAGEMENT.arrow()])
NOT_NULL = [f.name for f in ENGAGEMENT.fields if not f.nullable]
SHARDS = 4

GOOD_TRACKS = [f"t{i}" for i in range(6)]
GOOD_USERS = [f"u{i}" for i in range(5)]
GOOD_MARKETS = ["US", "GB", "SE"]


# ----------------------------------------------------------------- oracle ---
def broken_rules(row: dict) -> set[str]:
    """Every rule of docs/design.md §3 the row breaks (empty: the row keeps the contract)."""
    broken = {f"null_{k}" for k in NOT_NULL if row[k] is None}
    for k in ("event_id", "user_id", "track_id"):
        if row[k] == "":
            broken.add(f"empty_{k}")
    if row["market"] is not None and not re.fullmatch(r"[A-Z]{2}", row["market"]):
        broken.add("malformed_market")
    if row["surface"] is not None and row["surface"] not in ALL_SURFACES:
        broken.add("unknown_surface")
    if row["ms_played"] is not None and row["ms_played"] < 0:
        broken.add("negative_ms_played")
    if row["duration_ms"] is not None and row["duration_ms"] <= 0:
        broken.add("nonpositive_duration_ms")
    if row["event_ts"] is not None and not (LO <= row["event_ts"] < HI):
        broken.add("event_ts_outside_partition")
    if row["promoted"] and row["campaign_id"] is None:
        broken.add("promoted_without_campaign")
    return broken


# ------------------------------------------------------------- strategies ---
in_day_us = st.integers(0, 24 * 3600 * 10**6 - 1)


@st.composite
def good_row(draw):
    promoted = draw(st.booleans())
    ms = draw(st.integers(0, 10**7))
    return dict(
        event_id=None,  # assigned later, unique
        event_ts=DAY_START + dt.timedelta(microseconds=draw(in_day_us)),
        user_id=draw(st.sampled_from(GOOD_USERS)),
        track_id=draw(st.sampled_from(GOOD_TRACKS)),
        market=draw(st.sampled_from(GOOD_MARKETS)),
        surface=draw(st.sampled_from(ALL_SURFACES)),
        ms_played=ms,
        duration_ms=draw(st.integers(1, 10**7)),
        skipped=draw(st.booleans()),
        saved=draw(st.booleans()),
        promoted=promoted,
        campaign_id="c1" if promoted else draw(st.sampled_from([None, "c1"])),
    )


malformed_market = st.one_of(
    st.sampled_from(["us", "USA", "U1", "", " US", "US ", "U", "gb", "ÄB", "US\n"]),
    st.text(max_size=4).filter(lambda s: not re.fullmatch(r"[A-Z]{2}", s)))
unknown_surface = st.one_of(
    st.sampled_from(["Radio", "podcast", "radio_v2", "", "RADIO", " radio", "unknown"]),
    st.text(max_size=10).filter(lambda s: s not in ALL_SURFACES))
far_outside = st.one_of(
    st.integers(1, 10**12).map(lambda us: LO - dt.timedelta(microseconds=us)),
    st.integers(0, 10**12).map(lambda us: HI + dt.timedelta(microseconds=us)))

BREAKAGES = {
    "null_key": lambda draw, r: r.update({draw(st.sampled_from(NOT_NULL)): None}),
    "empty_id": lambda draw, r: r.update({draw(st.sampled_from(["event_id", "user_id", "track_id"])): ""}),
    "unknown_surface": lambda draw, r: r.update(surface=draw(unknown_surface)),
    "negative_ms_played": lambda draw, r: r.update(ms_played=draw(st.integers(-(2**62), -1))),
    "nonpositive_duration": lambda draw, r: r.update(duration_ms=draw(st.integers(-(2**40), 0))),
    "malformed_market": lambda draw, r: r.update(market=draw(malformed_market)),
    "event_ts_outside": lambda draw, r: r.update(event_ts=draw(far_outside)),
    "promoted_without_campaign": lambda draw, r: r.update(promoted=True, campaign_id=None),
}
hex8 = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)


@st.composite
def bad_row(draw):
    """A row breaking one to three rules. It plays on a promotion surface, with
    a track and a listener of its own (`poison-*`), so a leak would show in the
    aggregates."""
    r = draw(good_row())
    r.update(event_id="b-" + draw(hex8), track_id="poison-" + draw(hex8), user_id="poison-user-" + draw(hex8),
             surface=draw(st.sampled_from(PROMOTION_SURFACES)))
    for k in draw(st.lists(st.sampled_from(sorted(BREAKAGES)), min_size=1, max_size=3, unique=True)):
        BREAKAGES[k](draw, r)
    return r


@st.composite
def batches(draw):
    goods = draw(st.lists(good_row(), min_size=0, max_size=40))
    for i, g in enumerate(goods):
        g["event_id"] = f"g{i}"
    bads = draw(st.lists(bad_row(), min_size=1, max_size=25))
    # resent duplicates: exact copies of good events count once
    copies = [dict(goods[i]) for i in draw(st.lists(st.integers(0, len(goods) - 1), max_size=5))] if goods else []
    for b in bads:
        # some bad rows carry the event_id of a good row: whatever the order,
        # they must not take part in the "first seen" de-duplication
        if goods and b["event_id"] not in (None, "") and draw(st.booleans()):
            b["event_id"] = draw(st.sampled_from(goods))["event_id"]
    rows = goods + copies + bads
    order = draw(st.permutations(range(len(rows))))
    return [rows[i] for i in order]


# --------------------------------------------------------------- pipeline ---
def run_pure_pipeline(rows):
    """check -> split -> shard -> group -> aggregate, as pipelines.daily wires them."""
    table = pa.Table.from_pylist(rows, schema=NULLABLE)
    reasons = check_engagement(table, DAY, SLACK_H)
    good, dead = split_good_bad(table, reasons, day=DAY, source="engagement", source_file="in/part-0.parquet")
    groups = defaultdict(list)
    tracks, totals = [], []
    with tempfile.TemporaryDirectory() as scratch:
        spill = SpillShardsFn(scratch, SHARDS)
        spill.setup()
        for shard, ref in spill.process(((0, 0), good)):
            groups[shard].append(ref)
        fn = AggregateShardFn(DAY)  # every track is kept, so a leaked poison track would show
        fn.setup()
        for shard, refs in sorted(groups.items()):
            for out in fn.process((shard, refs)):
                if hasattr(out, "tag"):
                    totals.append(out.value)
                else:
                    tracks.append(out[1])
    return table, reasons, good, dead, tracks, totals


def expected_aggregates(rows):
    """Per (track, market, surface) signals of the oracle-good rows, first copy of
    each event_id only, promotion surfaces only."""
    seen, agg, tot = set(), {}, {}
    for r in rows:
        if broken_rules(r) or r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        if r["surface"] not in PROMOTION_SURFACES:
            continue
        a = agg.setdefault((r["track_id"], r["market"], r["surface"]),
                           dict(plays=0, listeners=set(), skips=0, saves=0, promoted_plays=0, ms_played=0))
        a["plays"] += 1
        a["listeners"].add(r["user_id"])
        a["skips"] += r["skipped"]
        a["saves"] += r["saved"]
        a["promoted_plays"] += r["promoted"]
        a["ms_played"] += r["ms_played"]
        t = tot.setdefault((r["market"], r["surface"]), dict(plays=0, skips=0, saves=0, promoted_plays=0))
        t["plays"] += 1
        t["skips"] += r["skipped"]
        t["saves"] += r["saved"]
        t["promoted_plays"] += r["promoted"]
    for a in agg.values():
        a["listeners"] = len(a["listeners"])
    return agg, tot


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_bad_rows_are_dead_lettered_with_a_reason_and_never_aggregated(rows):
    table, reasons, good, dead, tracks, totals = run_pure_pipeline(rows)  # never raises
    verdict = [broken_rules(r) for r in rows]
    assert any(verdict)  # the generator made at least one bad row

    # every bad row is dead-lettered, in input order, with a reason it really breaks;
    # no good row is
    bad_idx = [i for i, v in enumerate(verdict) if v]
    assert dead.num_rows == len(bad_idx) and good.num_rows == len(rows) - len(bad_idx)
    assert dead.schema == DEAD_LETTERS.arrow()
    got_reasons = reasons.to_pylist()
    for i, v in enumerate(verdict):
        assert (got_reasons[i] is None) == (not v), (rows[i], got_reasons[i], v)
        if v:
            assert got_reasons[i] in v, (rows[i], got_reasons[i], v)
    as_json = [json.dumps(r, default=str, sort_keys=True) for r in table.to_pylist()]
    assert dead.column("row_json").to_pylist() == [as_json[i] for i in bad_idx]
    assert dead.column("reason").to_pylist() == [got_reasons[i] for i in bad_idx]
    assert set(dead.column("source").to_pylist()) <= {"engagement"}
    assert all(d == DAY for d in dead.column("dt").to_pylist())

    # the aggregates are exactly those of the good rows: nothing of a bad row
    # (its track, its plays, its ms_played, its listener) reaches them
    exp_tracks, exp_totals = expected_aggregates(rows)
    got = {}
    for t in tracks:
        for r in t.to_pylist():
            key = (r["track_id"], r["market"], r["surface"])
            assert key not in got
            got[key] = {k: r[k] for k in ("plays", "listeners", "skips", "saves", "promoted_plays", "ms_played")}
            assert r["dt"] == DAY
    assert got == exp_tracks
    assert not any(k[0].startswith("poison-") for k in got)
    got_totals = defaultdict(lambda: dict(plays=0, skips=0, saves=0, promoted_plays=0))
    for t in totals:
        for r in t.to_pylist():
            for k in ("plays", "skips", "saves", "promoted_plays"):
                got_totals[(r["market"], r["surface"])][k] += r[k]
    assert dict(got_totals) == exp_totals


@settings(max_examples=60, deadline=None)
@given(st.lists(bad_row(), min_size=1, max_size=30))
def test_a_batch_of_only_bad_rows_aggregates_to_nothing(bads):
    _, _, good, dead, tracks, totals = run_pure_pipeline(bads)
    assert good.num_rows == 0 and dead.num_rows == len(bads)
    assert tracks == [] and totals == []
    assert dead.column("reason").null_count == 0


# ------------------------------------------------------------ end to end ---
INJECTED = [  # (reason, fields changed): each row breaks exactly one rule
    ("null_event_id", dict(event_id=None)),
    ("null_user_id", dict(user_id=None)),
    ("null_market", dict(market=None)),
    ("null_surface", dict(surface=None)),
    ("null_ms_played", dict(ms_played=None)),
    ("empty_event_id", dict(event_id="")),
    ("empty_user_id", dict(user_id="")),
    ("malformed_market", dict(market="us")),
    ("malformed_market", dict(market="USA")),
    ("unknown_surface", dict(surface="podcast")),
    ("unknown_surface", dict(surface="Radio")),
    ("negative_ms_played", dict(ms_played=-1)),
    ("event_ts_outside_partition", dict(event_ts=-dt.timedelta(days=3))),
    ("event_ts_outside_partition", dict(event_ts=dt.timedelta(days=40))),
    ("promoted_without_campaign", dict(promoted=True, campaign_id=None)),
]
POISON_TRACKS = ["trk-poison-000", "trk-poison-001"]


@pytest.fixture(scope="module")
def injected_run(tmp_path_factory):
    """A world without planted bad rows; two extra tracks enrolled (live
    campaign, US) whose only events are contract-breaking rows; and
    contract-breaking rows injected at the start of the last day's engagement
    file: each kind once on a poison track, once on a real enrolled track, and a
    few carrying the event_id of a good event further down the file."""
    from tests.support import worlds

    root = tmp_path_factory.mktemp("contract-e2e")
    w = worlds.make_world(str(root / "w"), days=4, tracks=60, events_per_day=4000, markets=2,
                          bad_row_share=0.0, seed=23)
    day = worlds.END
    (ef,) = glob.glob(f"{w}/enrollments/dt={day}/*.parquet")
    export = pq.read_table(ef)
    score_date = day + dt.timedelta(days=1)
    live = [e for e in export.to_pylist() if e["status"] == "active" and e["market"] == "US"
            and e["start_date"] <= score_date <= e["end_date"]]
    extra = [dict(live[0], track_id=t, release_date=dt.date(2020, 1, 1)) for t in POISON_TRACKS]
    pq.write_table(pa.concat_tables([export, pa.Table.from_pylist(extra, schema=export.schema)]), ef)

    (f,) = glob.glob(f"{w}/engagement/dt={day}/*.parquet")
    original = pq.read_table(f)
    assert check_engagement(original, day, SLACK_H).null_count == original.num_rows  # all good
    good_rows = original.to_pylist()
    real_tracks = sorted(set(export.column("track_id").to_pylist()))
    t0 = dt.datetime.combine(day, dt.time(12), tzinfo=UTC)
    injected = []
    for i, (reason, over) in enumerate(INJECTED):
        for j, track in enumerate([POISON_TRACKS[i % 2], real_tracks[i % len(real_tracks)]]):
            row = dict(event_id=f"bad-event-{i:02d}-{j}", event_ts=t0, user_id=f"bad-user-{i:02d}-{j}",
                       track_id=track, market="US", surface="radio", ms_played=60_000, duration_ms=200_000,
                       skipped=False, saved=True, promoted=False, campaign_id=None)
            row.update(over)
            if isinstance(row["event_ts"], dt.timedelta):
                row["event_ts"] = t0 + row["event_ts"]
            injected.append((reason, row))
    for k, (reason, over) in enumerate([("negative_ms_played", dict(ms_played=-5)),
                                        ("unknown_surface", dict(surface="tv")),
                                        ("malformed_market", dict(market="u5"))]):
        g = good_rows[100 * (k + 1)]
        injected.append((reason, dict(g, user_id=f"bad-user-dup-{k}", **over)))
    assert len(injected) / (original.num_rows + len(injected)) < 0.01  # below the ceiling
    schema = pa.schema([pa.field(x.name, x.type, nullable=True) for x in original.schema])
    pq.write_table(pa.Table.from_pylist([r for _, r in injected] + good_rows, schema=schema), f)

    out = str(root / "out")
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--date", day.isoformat(), "--input", w,
                           "--output", out], capture_output=True, text=True, timeout=600)
    enrolled = sorted(set(real_tracks) | set(POISON_TRACKS))
    return dict(world=w, out=out, proc=proc, injected=injected, original=original, enrolled=enrolled, day=day)


def test_injected_bad_rows_end_to_end(injected_run):
    from tests.support import worlds

    r = injected_run
    assert r["proc"].returncode == 0, r["proc"].stderr[-3000:]
    (snap,) = worlds.snapshot_dirs(r["out"])
    m = worlds.manifest(snap)
    injected = r["injected"]
    day = r["day"]

    # the dead letters hold every injected row with its reason, and nothing else
    dead = pq.read_table(m["dead_letters"]).to_pandas()
    assert len(dead) == m["dead_letter_count"] == len(injected)
    assert m["bad_rows"][f"engagement/{day}"]["dead_lettered"] == len(injected)
    got = sorted((d.reason, json.loads(d.row_json)["user_id"], json.loads(d.row_json)["event_id"])
                 for d in dead.itertuples())
    assert got == sorted((reason, row["user_id"], row["event_id"]) for reason, row in injected)

    # the poison tracks are enrolled and scored, but none of their (bad) events counts
    scores = worlds.table(snap, "promotion_scores")
    poison = scores[scores["track_id"].isin(POISON_TRACKS)]
    assert len(poison) == 2 * 3  # one row per (track, US, surface)
    assert (poison["plays"] == 0).all() and (~poison["eligible"]).all()
    assert (poison["planned_promoted_plays"] == 0).all() and (poison["score"] == 0).all()
    assert scores["market"].str.fullmatch("[A-Z]{2}").all()
    assert set(scores["surface"]) <= set(PROMOTION_SURFACES)

    # the day's aggregates are exactly those of the original good events: none
    # of the injected rows was counted, and none displaced a good event with its event_id
    build = open(f"{r['out']}/aggregates/dt={day}/_SUCCESS").read().strip()
    aggs = pq.read_table(f"{r['out']}/aggregates/dt={day}/{build}/tracks").to_pandas()
    ev = r["original"].to_pandas().drop_duplicates("event_id", keep="first")
    ev = ev[ev["surface"].isin(PROMOTION_SURFACES)]     # every track, enrolled or not (aggregate format 2)
    keys = ["track_id", "market", "surface"]
    exp = (ev.assign(skips=ev.skipped.astype("int64"), saves=ev.saved.astype("int64"),
                     promoted_plays=ev.promoted.astype("int64"),
                     promoted_skips=(ev.skipped & ev.promoted).astype("int64"),
                     promoted_saves=(ev.saved & ev.promoted).astype("int64"))
           .groupby(keys)
           .agg(plays=("event_id", "size"), listeners=("user_id", "nunique"), skips=("skips", "sum"),
                saves=("saves", "sum"), promoted_plays=("promoted_plays", "sum"),
                ms_played=("ms_played", "sum"), promoted_skips=("promoted_skips", "sum"),
                promoted_saves=("promoted_saves", "sum"))
           .reset_index().sort_values(keys).reset_index(drop=True))
    got_aggs = aggs[list(exp.columns)].sort_values(keys).reset_index(drop=True)
    assert got_aggs.astype(str).equals(exp.astype(str))
    assert not set(POISON_TRACKS) & set(aggs["track_id"])

    # no injected listener or event id anywhere in the published tables
    marks = [row["user_id"] for _, row in injected if row["user_id"]] + ["bad-event-"]
    for name in ("promotion_scores", "campaign_delivery", "capacity"):
        text = worlds.table(snap, name).astype(str).to_csv()
        assert not [x for x in marks if x in text], name
