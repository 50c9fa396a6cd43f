"""`oasis sample`: the synthetic world is deterministic, keeps the input contract
exactly, and plants every realistic feature (and every kind of broken row) the
pipeline has to cope with."""
from __future__ import annotations

import calendar
import datetime as dt
import glob
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from jobs.cli import sample as sample_cli
from jobs.sample import draws
from jobs.sample import generate as sample
from schemas import ALL_SURFACES, ENGAGEMENT, ENROLLMENTS, PROMOTION_SURFACES

END = dt.date(2026, 11, 24)
DAYS = 5
PARAMS = dict(days=DAYS, tracks=120, events_per_day=3000, seed=7, end_date=END, progress=False)
KEY = ["campaign_id", "track_id", "market"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    summary = sample.generate_world(out, **PARAMS)
    return out, summary


def _days():
    return [END - dt.timedelta(days=i) for i in range(DAYS - 1, -1, -1)]


def _files(root):
    """The world's files (not sample's own record, which holds timings)."""
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                  if os.path.isfile(p) and os.path.basename(p) != sample.SAMPLE_RECORD)


def _read(root, table, day):
    return pq.read_table(os.path.join(root, table, f"dt={day.isoformat()}")).to_pandas()


def _all_engagement(root):
    frames = []
    for d in _days():
        df = _read(root, "engagement", d)
        df["dt"] = d
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _bad_kinds(ev: pd.DataFrame) -> pd.DataFrame:
    day_start = pd.to_datetime(ev["dt"].astype(str)).dt.tz_localize("UTC")
    offset = ev["event_ts"] - day_start
    return pd.DataFrame({
        "surface": ~ev["surface"].isin(ALL_SURFACES),
        "ms_played": ev["ms_played"] < 0,
        "market": ~ev["market"].str.fullmatch(r"[A-Z]{2}"),
        "event_ts": (offset < pd.Timedelta(days=-1)) | (offset > pd.Timedelta(days=2)),
        "track_id": ev["track_id"] == "",
    })


# --------------------------------------------------------------- layout ---
def test_layout_and_schemas_match_the_contract(world):
    out, summary = world
    assert open(os.path.join(out, "LAST_DAY")).read().strip() == END.isoformat()
    assert summary["first_day"] == _days()[0].isoformat() and summary["last_day"] == END.isoformat()
    for d in _days():
        enr = glob.glob(os.path.join(out, "enrollments", f"dt={d}", "*.parquet"))
        eng = glob.glob(os.path.join(out, "engagement", f"dt={d}", "*.parquet"))
        assert [os.path.basename(p) for p in enr] == ["part-00000.parquet"]
        assert eng and all(re.fullmatch(r"part-\d{5}\.parquet", os.path.basename(p)) for p in eng)
        for path in enr:
            assert pq.read_schema(path).remove_metadata().equals(ENROLLMENTS.arrow()), path
        for path in eng:
            # without --holdout the optional holdout column is absent, as in logs from before the holdout
            want = pa.schema([f for f in ENGAGEMENT.arrow() if f.name not in ENGAGEMENT.optional_names])
            assert pq.read_schema(path).remove_metadata().equals(want), path
        # --events-per-day is the organic plays of an average day: weekday factors (+-15% per market and
        # surface), decay and promoted plays on top move a day's rows around it
        rows = sum(pq.ParquetFile(path).metadata.num_rows for path in eng)
        assert 0.8 * PARAMS["events_per_day"] <= rows <= 1.3 * PARAMS["events_per_day"], (d, rows)
    truth = pq.read_table(os.path.join(out, "truth", "tracks.parquet")).to_pandas()
    assert {"track_id", "market", "surface", "skip_prob", "save_prob", "disliked", "release_date",
            "popularity"} <= set(truth.columns)
    assert set(truth["surface"]) == set(PROMOTION_SURFACES)
    assert not truth.duplicated(["track_id", "market", "surface"]).any()


def test_large_days_are_split_into_files_and_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "MAX_ROWS_PER_FILE", 1000)
    monkeypatch.setattr(sample, "ROW_GROUP_SIZE", 256)
    sample.generate_world(str(tmp_path), days=1, tracks=20, events_per_day=2500, seed=1, end_date=END,
                          progress=False)
    files = sorted(glob.glob(os.path.join(tmp_path, "engagement", f"dt={END}", "*.parquet")))
    assert [os.path.basename(f) for f in files] == [f"part-{i:05d}.parquet" for i in range(3)]
    metas = [pq.ParquetFile(f).metadata for f in files]
    assert 2000 < sum(m.num_rows for m in metas) <= 3000
    assert all(m.num_rows <= 1000 for m in metas)
    assert all(m.row_group(i).num_rows <= 256 for m in metas for i in range(m.num_row_groups))


def test_a_non_empty_folder_is_refused_unless_overwrite_and_foreign_files_are_never_deleted(tmp_path):
    """`oasis sample --out <a 35-day world>` once replaced it by 2 days silently;
    now: the same world again is a no-op, another world needs --overwrite, and
    --overwrite deletes only what sample wrote (no stale partition survives)."""
    out = str(tmp_path / "w")
    three = dict(days=3, tracks=20, events_per_day=100, seed=1, end_date=END, progress=False)
    sample.generate_world(out, **three)
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in _files(out)}
    assert sample.generate_world(out, **three)["reused"] is True  # same arguments, files intact: nothing to do
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in _files(out)} == before
    with pytest.raises(sample.FolderInUse, match=r"days 3 -> 1.*--overwrite"):
        sample.generate_world(out, **{**three, "days": 1})
    assert _files(out) == sorted(before)  # refused: nothing deleted
    sample.generate_world(out, **{**three, "days": 1}, overwrite=True)
    assert os.listdir(os.path.join(out, "engagement")) == [f"dt={END}"]
    assert os.listdir(os.path.join(out, "enrollments")) == [f"dt={END}"]
    # a file sample did not write: refused even with --overwrite, and kept
    mine = os.path.join(out, "engagement", "notes.txt")
    open(mine, "w").write("mine")
    with pytest.raises(sample.FolderInUse, match="did not write"):
        sample.generate_world(out, **three, overwrite=True)
    assert open(mine).read() == "mine" and os.listdir(os.path.join(out, "enrollments")) == [f"dt={END}"]
    # a folder of someone else's files (no record) is refused whole
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x")
    with pytest.raises(sample.FolderInUse, match="did not write"):
        sample.generate_world(str(other), **three, overwrite=True)
    assert os.listdir(other) == ["data.csv"]


def test_a_damaged_world_is_not_reused(tmp_path):
    out = str(tmp_path / "w")
    args = dict(days=2, tracks=20, events_per_day=100, seed=1, end_date=END, progress=False)
    sample.generate_world(out, **args)
    os.remove(os.path.join(out, "engagement", f"dt={END}", "part-00000.parquet"))
    with pytest.raises(sample.FolderInUse, match="files changed"):
        sample.generate_world(out, **args)
    assert sample.generate_world(out, **args, overwrite=True).get("reused") is None
    assert os.path.isfile(os.path.join(out, "engagement", f"dt={END}", "part-00000.parquet"))


# ---------------------------------------------------------- determinism ---
def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    out, _ = world
    again = str(tmp_path / "again")
    other = str(tmp_path / "other")
    sample.generate_world(again, **PARAMS)
    sample.generate_world(other, **{**PARAMS, "seed": 8})
    files = _files(out)
    assert files == _files(again) == _files(other)
    for f in files:
        with open(os.path.join(out, f), "rb") as a, open(os.path.join(again, f), "rb") as b:
            assert a.read() == b.read(), f
    differs = []
    for f in files:
        with open(os.path.join(out, f), "rb") as a, open(os.path.join(other, f), "rb") as b:
            differs.append(a.read() != b.read())
    # the holiday is planted by the parameters, not the seed (and is outside this 5-day world)
    assert all(d for f, d in zip(files, differs) if f.endswith(".parquet") and f != "truth/holidays.parquet")


# ---------------------------------------------------------- enrollments ---
def test_enrollment_exports_follow_the_campaign_calendar(world):
    out, _ = world
    for d in _days():
        en = _read(out, "enrollments", d)
        month_start = d.replace(day=1)
        month_end = d.replace(day=calendar.monthrange(d.year, d.month)[1])
        starts = set(en["start_date"])
        # a campaign is one licensor's calendar month
        assert all(s.day == 1 for s in starts)
        assert (en["end_date"] == en["start_date"].map(
            lambda s: s.replace(day=calendar.monthrange(s.year, s.month)[1]))).all()
        assert en.groupby("campaign_id")["licensor_id"].nunique().max() == 1
        assert en.groupby("campaign_id")["start_date"].nunique().max() == 1
        # ended previous-month campaigns and current ones are in every export
        assert (en["end_date"] < d).any()
        assert (en["start_date"] == month_start).any()
        # next month's only in the last week of a month
        next_month = en["start_date"] > month_end
        if next_month.any():
            assert draws.near_month_end(d)
        assert set(en["start_date"]) <= {
            dt.date(*draws.month_add(d.year, d.month, k), 1) for k in (-1, 0, 1)}
        # nothing is exported before it was updated
        assert (en["updated_at"] < pd.Timestamp(d + dt.timedelta(days=1), tz="UTC")).all()
    # the default end date (Nov 24) is in the last week: December campaigns are already there
    if END == dt.date(2026, 11, 24):
        last = _read(out, "enrollments", END)
        assert (last["start_date"] == dt.date(2026, 12, 1)).any()


def test_enrollment_rows_are_realistic(world):
    out, _ = world
    en = _read(out, "enrollments", END)
    assert en["market"].str.fullmatch(r"[A-Z]{2}").all()
    assert en["surfaces"].map(len).min() >= 1
    assert en["surfaces"].map(lambda s: set(s) <= set(PROMOTION_SURFACES) and len(set(s)) == len(s)).all()
    assert (en["surfaces"].map(len) == 3).mean() > 0.6
    assert ((en["commission_rate"] > 0) & (en["commission_rate"] < 1)).all()
    assert en["commission_rate"].median() == pytest.approx(0.30)
    # each track has one artist, each artist one licensor, each track a few markets
    assert en.groupby("track_id")["artist_id"].nunique().max() == 1
    assert en.groupby("artist_id")["licensor_id"].nunique().max() == 1
    markets_per_track = en.groupby("track_id")["market"].nunique()
    assert markets_per_track.max() <= 4 and markets_per_track.mean() > 1.3
    # licensors of very different sizes
    tracks_per_licensor = en.groupby("licensor_id")["track_id"].nunique().sort_values()
    assert tracks_per_licensor.iloc[-1] >= 4 * tracks_per_licensor.median()
    assert tracks_per_licensor.iloc[-3:].sum() > 0.3 * tracks_per_licensor.sum()
    assert (tracks_per_licensor <= 3).sum() >= 3                # small distributors
    # markets of different sizes
    per_market = en.groupby("market").size()
    assert per_market.max() >= 3 * per_market.min()


def test_status_history_has_superseded_paused_and_cancelled_rows(world):
    out, _ = world
    en = _read(out, "enrollments", END)
    assert set(en["status"]) == {"active", "paused", "cancelled"}
    assert (en["status"] == "active").mean() > 0.6
    dup = en[en.duplicated(KEY, keep=False)]
    assert len(dup) > 0
    per_key = dup.groupby(KEY).agg(n_ts=("updated_at", "nunique"), n_status=("status", "nunique"),
                                   n=("status", "size"))
    assert (per_key["n_ts"] == per_key["n"]).all()           # superseded rows differ in updated_at
    assert (per_key["n_status"] >= 2).all()                  # ... and in status
    latest = dup.sort_values("updated_at").groupby(KEY).tail(1)
    assert {"active", "paused"} <= set(latest["status"])      # the latest is sometimes one, sometimes the other
    assert set(en.sort_values("updated_at").groupby(KEY).tail(1)["status"]) == {"active", "paused", "cancelled"}
    # superseded rows are copies of the enrollment but for status and updated_at
    same = dup.groupby(KEY).agg({c: "nunique" for c in ("artist_id", "licensor_id", "start_date",
                                                         "commission_rate", "release_date")})
    assert (same == 1).all().all()


def test_young_and_old_tracks(world):
    out, _ = world
    en = _read(out, "enrollments", END)
    tracks = en.drop_duplicates("track_id")
    age = tracks["release_date"].map(lambda r: (END - r).days)
    assert (age < 30).sum() >= 2                             # recently released tracks are enrolled
    assert (age > 365).mean() > 0.7                          # most were released long ago
    truth = pq.read_table(os.path.join(out, "truth", "tracks.parquet")).to_pandas()
    ev = _all_engagement(out)
    young = truth[truth["release_date"].map(lambda r: (END - r).days) < 30]
    assert len(young)
    release = dict(zip(young["track_id"], young["release_date"]))
    plays = ev[ev["track_id"].isin(release)]
    assert (plays["dt"] >= plays["track_id"].map(release)).all()   # no plays before the release day


# ----------------------------------------------------------- engagement ---
def test_engagement_rows_are_consistent(world):
    out, _ = world
    ev = _all_engagement(out)
    clean = ev[~_bad_kinds(ev).any(axis=1)]
    assert set(clean["surface"]) == set(ALL_SURFACES)
    assert (clean.loc[clean["skipped"], "ms_played"] < 30_000).all()
    assert (clean.loc[~clean["skipped"], "ms_played"] >= 30_000).all()
    assert (clean["ms_played"] <= clean["duration_ms"]).all() and (clean["duration_ms"] > 0).all()
    assert not (clean["saved"] & clean["skipped"]).any()
    assert clean["saved"].mean() > 0.01
    assert 0.15 < clean["skipped"].mean() < 0.45
    assert (clean["promoted"] == clean["campaign_id"].notna()).all()
    assert clean.loc[clean["promoted"], "surface"].isin(PROMOTION_SURFACES).all()
    assert clean["promoted"].any()
    day_start = pd.to_datetime(clean["dt"].astype(str)).dt.tz_localize("UTC")
    offset = clean["event_ts"] - day_start
    assert ((offset >= pd.Timedelta(0)) & (offset < pd.Timedelta(days=1))).all()
    assert (clean["event_ts"].dt.tz is not None) and (clean["event_ts"].dt.microsecond != 0).any()
    # listeners are a skewed pool per market
    plays_per_user = clean.groupby("user_id").size()
    assert plays_per_user.max() >= 5 * plays_per_user.median()
    assert clean.groupby("user_id")["market"].nunique().max() == 1
    # skewed track popularity: the top 1% of tracks get far more than 1% of the plays
    per_track = clean.groupby("track_id").size().sort_values(ascending=False)
    top = per_track.iloc[: max(1, len(per_track) // 100)].sum() / per_track.sum()
    assert top > 0.1


def test_share_of_plays_on_enrolled_tracks(world):
    out, _ = world
    shares = []
    for d in _days():
        en = _read(out, "enrollments", d)
        ev = _read(out, "engagement", d)
        enrolled = set(zip(en["track_id"], en["market"]))
        shares.append(np.mean([k in enrolled for k in zip(ev["track_id"], ev["market"])]))
    assert 0.28 < np.mean(shares) < 0.42


def test_promoted_plays_belong_to_active_campaigns(world):
    out, _ = world
    for d in _days():
        en = _read(out, "enrollments", d)
        ev = _read(out, "engagement", d)
        ev["dt"] = d
        promo = ev[ev["promoted"] & ~_bad_kinds(ev).any(axis=1)]
        assert len(promo)
        # status at the start of the day: the latest row per key updated before it
        before = en[en["updated_at"] < pd.Timestamp(d, tz="UTC")]
        state = before.sort_values("updated_at").groupby(KEY).tail(1).set_index(KEY)
        for row in promo.itertuples():
            enr = state.loc[(row.campaign_id, row.track_id, row.market)]
            assert enr["status"] == "active"
            assert enr["start_date"] <= d <= enr["end_date"]
            assert row.surface in enr["surfaces"]


def test_resent_duplicates(world):
    out, _ = world
    for d in _days():
        ev = _read(out, "engagement", d)
        repeated = ev[ev["event_id"].duplicated(keep=False)]
        copies = ev["event_id"].duplicated().sum()
        assert copies == pytest.approx(0.005 * len(ev), abs=3)
        # exact copies: every field equal
        assert repeated.drop_duplicates().shape[0] == repeated["event_id"].nunique()
        assert ev.duplicated().sum() == copies


def test_bad_rows_of_every_kind_at_the_requested_share(world, tmp_path):
    out, _ = world
    ev = _all_engagement(out)
    kinds = _bad_kinds(ev)
    assert kinds.any(axis=0).all(), kinds.sum().to_dict()
    assert kinds.any(axis=1).mean() == pytest.approx(0.002, rel=0.25)
    # malformed markets: both lower case and alpha-3
    bad_markets = ev.loc[kinds["market"], "market"]
    assert bad_markets.str.fullmatch("[a-z]{2}").any() and bad_markets.str.fullmatch("[A-Z]{3}").any()
    # the share follows --bad-row-share
    other = str(tmp_path / "bad")
    sample.generate_world(other, **{**PARAMS, "days": 2, "bad_row_share": 0.03})
    ev2 = pd.concat([_read(other, "engagement", d).assign(dt=d) for d in _days()[-2:]], ignore_index=True)
    assert _bad_kinds(ev2).any(axis=1).mean() == pytest.approx(0.03, rel=0.1)
    none = str(tmp_path / "none")
    sample.generate_world(none, **{**PARAMS, "days": 1, "bad_row_share": 0.0})
    ev3 = _read(none, "engagement", END).assign(dt=END)
    assert not _bad_kinds(ev3).any(axis=1).any()


# ---------------------------------------------------------------- truth ---
def test_planted_truth_dislikes_and_variation(world):
    out, _ = world
    truth = pq.read_table(os.path.join(out, "truth", "tracks.parquet")).to_pandas()
    per_track = truth.groupby("track_id")["disliked"].first()
    assert per_track.mean() == pytest.approx(0.08, abs=0.03)
    lift = truth["skip_prob"] - truth["baseline_skip_prob"]
    assert (lift[truth["disliked"]] >= 0.25).all()
    assert lift[~truth["disliked"]].abs().max() < 0.25
    assert 0.03 < lift[~truth["disliked"]].std() < 0.1
    assert truth["baseline_skip_prob"].between(0.2, 0.4).all()
    assert truth["save_prob"].quantile(0.1) > 0.01 and truth["save_prob"].quantile(0.9) < 0.12
    assert truth.groupby("track_id")["save_prob"].mean().std() > 0.005
    # the planted dislike shows in the events
    ev = _all_engagement(out)
    ev = ev[ev["surface"].isin(PROMOTION_SURFACES)]
    disliked = set(truth.loc[truth["disliked"], "track_id"])
    enrolled = set(truth["track_id"])
    ev = ev[ev["track_id"].isin(enrolled)]
    is_disliked = ev["track_id"].isin(disliked)
    assert is_disliked.any()
    assert ev.loc[is_disliked, "skipped"].mean() > ev.loc[~is_disliked, "skipped"].mean() + 0.15


# ------------------------------------------------------------------ CLI ---
def test_arguments_and_main(tmp_path, capsys):
    parser = cli_main.parser()
    args = parser.parse_args(["sample", "--out", str(tmp_path)])
    assert (args.days, args.tracks, args.events_per_day, args.seed, args.end_date, args.bad_row_share,
            args.markets) == (35, 400, 40000, 7, dt.date(2026, 11, 24), 0.002, 6)
    args = parser.parse_args(["sample", "--out", str(tmp_path), "--days", "2", "--tracks", "30",
                              "--events-per-day", "200", "--end-date", "2026-03-02", "--markets", "3", "--seed", "3"])
    assert sample_cli.main(args, []) == 0
    assert open(os.path.join(tmp_path, "LAST_DAY")).read().strip() == "2026-03-02"
    markets = set(_read(str(tmp_path), "enrollments", dt.date(2026, 3, 2))["market"])
    assert markets <= {"US", "GB", "DE"} and len(markets) >= 2
    captured = capsys.readouterr()
    assert "2026-03-01" in captured.err and "2026-03-02" in captured.err      # progress, one line a day
    assert str(tmp_path) in captured.out


@pytest.mark.parametrize("bad", [dict(days=0), dict(markets=0), dict(markets=99), dict(bad_row_share=0.6),
                                 dict(tracks=3), dict(events_per_day=-1)])
def test_invalid_arguments_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        sample.generate_world(str(tmp_path), **{**PARAMS, **bad})


# --------------------------------------------------------------- supply ---
SUPPLY_END = dt.date(2026, 11, 10)       # 30 days from Oct 12: the Nov 1 first-time enrollees, the Nov 1 holiday


@pytest.fixture(scope="module")
def supply_world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("supply"))
    sample.generate_world(out, days=30, tracks=80, events_per_day=20_000, seed=5, end_date=SUPPLY_END, markets=2,
                          progress=False)
    return out


def _truth(out, name):
    return pq.read_table(os.path.join(out, "truth", f"{name}.parquet")).to_pandas()


def _engagement(out):
    frames = [pq.read_table(p, columns=["event_id", "track_id", "market", "surface", "skipped", "promoted"])
              .to_pandas().assign(dt=dt.date.fromisoformat(os.path.basename(os.path.dirname(p))[3:]))
              for p in sorted(glob.glob(os.path.join(out, "engagement", "dt=*", "*.parquet")))]
    ev = pd.concat(frames, ignore_index=True).drop_duplicates("event_id")
    return ev[ev["surface"].isin(ALL_SURFACES) & ev["market"].isin(["US", "GB"])]


def test_plays_follow_the_planted_expected_supply(supply_world):
    """Each (day, market, surface)'s plays are its planted expectation (truth/
    surface_days), within Poisson noise; the weekday factors and the holiday
    (+40%, every surface of one market) are in it."""
    ev = _engagement(supply_world)
    got = ev.groupby(["dt", "market", "surface"]).size().rename("plays").reset_index()
    want = _truth(supply_world, "surface_days")
    m = want.merge(got, on=["dt", "market", "surface"], how="left").fillna({"plays": 0})
    z = (m["plays"] - m["expected_plays"]) / np.sqrt(m["expected_plays"])
    assert len(m) == 30 * 2 * len(ALL_SURFACES)
    assert np.abs(z).quantile(0.99) < 4.5 and abs(z.mean()) < 0.3
    week = _truth(supply_world, "weekday")
    per = week.groupby(["market", "surface"])["factor"]
    assert np.allclose(per.mean(), 1.0) and np.allclose((per.max() - 1).abs().combine((1 - per.min()).abs(), max),
                                                         0.15)
    (hol,) = _truth(supply_world, "holidays").itertuples()
    us = m[m["market"] == hol.market].groupby("dt")["expected_plays"].sum()
    before = us[us.index < hol.dt].tail(7).mean()
    assert us[hol.dt] > 1.2 * before


def test_first_time_enrollees_enter_the_export_shortly_before_their_first_flight(supply_world):
    truth = _truth(supply_world, "tracks")
    first = truth.dropna(subset=["first_flight_start"]).drop_duplicates(["track_id", "market"])
    assert len(first) >= 5 and set(first["first_flight_start"]) == {dt.date(2026, 11, 1)}
    seen = {}
    for p in sorted(glob.glob(os.path.join(supply_world, "enrollments", "dt=*", "*.parquet"))):
        day = dt.date.fromisoformat(os.path.basename(os.path.dirname(p))[3:])
        for t in pq.read_table(p, columns=["track_id"]).column("track_id").to_pylist():
            seen.setdefault(t, day)
    appeared = [seen.get(t) for t in first["track_id"].unique()]
    assert all(a is not None and dt.date(2026, 10, 21) <= a <= dt.date(2026, 11, 1) for a in appeared), appeared
    # the established ones among them played before they were ever exported: the history the pipeline keeps
    ev = _engagement(supply_world)
    old = first[pd.to_datetime(first["release_date"]).dt.date < dt.date(2026, 10, 1)]
    early = ev[ev["track_id"].isin(old["track_id"]) & (ev["dt"] < dt.date(2026, 10, 20))]
    assert len(old) and len(early) > 0


def test_promoted_plays_of_planted_tracks_are_skipped_more(supply_world):
    truth = _truth(supply_world, "tracks")
    marked = set(truth.loc[truth["promoted_disliked"], "track_id"])
    assert marked and not (truth["promoted_disliked"] & truth["disliked"]).any()
    lift = truth["promoted_skip_prob"] - truth["skip_prob"]
    assert np.allclose(lift[truth["promoted_disliked"]], 0.15, atol=1e-9) and (lift[~truth["promoted_disliked"]] == 0).all()
    ev = _engagement(supply_world)
    ev = ev[ev["surface"].isin(PROMOTION_SURFACES) & ev["track_id"].isin(marked)]
    rates = ev.groupby("promoted")["skipped"].mean()
    assert rates[True] > rates[False] + 0.08
