"""`oasis explain` end to end: one small world published once, then explain
an eligible and an ineligible track through the real CLI; every number it
prints must be the published one, prices included (read from the snapshot's
prices table, not re-solved; an older snapshot without one is re-solved)."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from jobs import explain as explain_module
from jobs.cli import main as cli
from pipelines.allocation import verify as yardstick
from pipelines.allocation.exact import solve_exact
from schemas import PROMOTION_SURFACES
from tests.support import lp_oracle, worlds

DAY = worlds.END.isoformat()
SCORE_DATE = (worlds.END + dt.timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    w = worlds.make_world(str(tmp_path_factory.mktemp("world")), days=6, tracks=60, events_per_day=3000, markets=2)
    out = str(tmp_path_factory.mktemp("out"))
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(["run", "--date", DAY, "--input", w, "--output", out])
    assert rc == 0, err.getvalue()[-3000:]
    (snap,) = worlds.snapshot_dirs(out)
    return {"world": w, "out": out, "snap": snap, "manifest": worlds.manifest(snap),
            "scores": worlds.table(snap, "promotion_scores"), "delivery": worlds.table(snap, "campaign_delivery"),
            "capacity": worlds.table(snap, "capacity"), "prices": worlds.table(snap, "prices")}


def explain(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["explain", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def explain_json(capsys, out, track, market, *extra) -> dict:
    rc, stdout, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market, "--output", out,
                              "--json", *extra)
    assert rc == 0, err
    return json.loads(stdout)


def _eligible_track(scores: pd.DataFrame) -> tuple[str, str]:
    """A track eligible on all three surfaces of a market with at least one
    surface at its track cap (score 1), so the LP section has something binding."""
    el = scores.groupby(["track_id", "market"]).agg(n=("eligible", "sum"), top=("score", "max")).reset_index()
    el = el[(el["n"] == 3) & (el["top"] >= 1 - 1e-9)].sort_values(["track_id", "market"])
    assert len(el), "the small world has no fully eligible track at its cap"
    r = el.iloc[0]
    return r["track_id"], r["market"]


def _ineligible_track(scores: pd.DataFrame, reason: str) -> tuple[str, str]:
    r = scores[scores["reason"] == reason].sort_values(["track_id", "market"])
    assert len(r), f"the small world has no {reason} row"
    return r.iloc[0]["track_id"], r.iloc[0]["market"]


def _row(df: pd.DataFrame, **key) -> pd.Series:
    m = np.ones(len(df), dtype=bool)
    for k, v in key.items():
        m &= (df[k] == v).to_numpy()
    (i,) = np.flatnonzero(m)
    return df.iloc[i]


def _assert_matches_published(doc: dict, p: dict, track: str, market: str):
    scores, delivery, capacity = p["scores"], p["delivery"], p["capacity"]
    cfg = p["manifest"]["config"]
    assert doc["snapshot_id"] == p["manifest"]["snapshot_id"] and doc["score_date"] == SCORE_DATE
    assert [s["surface"] for s in doc["surfaces"]] == list(PROMOTION_SURFACES)
    for s in doc["surfaces"]:
        row = _row(scores, track_id=track, market=market, surface=s["surface"])
        cap = _row(capacity, market=market, surface=s["surface"])
        assert s["eligible"] == bool(row["eligible"])
        assert s["reason"] == (row["reason"] if isinstance(row["reason"], str) else None)
        assert (s["campaign_id"], s["artist_id"], s["licensor_id"]) == (
            row["campaign_id"], row["artist_id"], row["licensor_id"])
        g = s["signals"]
        assert (g["plays"], g["skips"], g["saves"]) == (row["plays"], row["skips"], row["saves"])
        assert g["weighted_plays"] == row["weighted_plays"]
        assert g["baseline_skip_rate"] == cap["baseline_skip_rate"]
        assert g["baseline_save_rate"] == cap["baseline_save_rate"]
        assert s["window_plays_all_surfaces"] == scores[(scores["track_id"] == track)
                                                       & (scores["market"] == market)]["plays"].sum()
        for kind in ("skip", "save"):
            h = s["shrinkage"][kind]
            assert h["shrunk_rate"] == row[f"{kind}_rate"]
            assert h["prior_strength"] == cap[f"prior_strength_{kind}"]
            assert h["baseline_rate"] == cap[f"baseline_{kind}_rate"]
            # shrunk toward the enrolled pool's mean, by k / (n + k) with n the effective plays; the derived
            # decay-weighted rate shrinks back to the published rate
            assert h["prior_mean"] == cap[f"prior_mean_{kind}"] and h["effective_plays"] == row["effective_plays"]
            n, k, m = h["effective_plays"], h["prior_strength"], h["prior_mean"]
            assert h["shrunk_by"] == pytest.approx(k / (n + k), rel=1e-12)
            if h["weighted_rate"] is not None:
                assert (h["weighted_rate"] * n + m * k) / (n + k) == pytest.approx(row[f"{kind}_rate"], abs=1e-12)
        v = s["value"]
        assert v["value"] == row["value"] and v["lambda"] == cfg["skip_penalty"]
        assert v["save_lift"] - v["lambda"] * v["skip_lift"] == pytest.approx(row["value"], abs=1e-12)
        assert s["supply"]["supply_forecast"] == row["supply_forecast"]
        assert s["supply"]["max_promoted_plays"] == row["max_promoted_plays"]
        assert (s["supply"]["low"], s["supply"]["high"]) == (row["supply_forecast_low"], row["supply_forecast_high"])
        g = s["guardrail"]
        assert g["pulled_back"] == bool(row["pulled_back"])
        if pd.isna(row["dislike_probability"]):
            assert not g["evaluated"]
        else:
            assert (g["probability"], g["promoted_probability"]) == (row["dislike_probability"],
                                                                      row["promoted_dislike_probability"])
        assert s["result"] == {"planned_promoted_plays": row["planned_promoted_plays"],
                               "boost_probability": row["boost_probability"], "score": row["score"],
                               "serving_gain": cap["serving_gain"]}
        lp = s["lp"]
        assert lp["capacity"]["capacity"] == cap["capacity"]
        assert lp["capacity"]["published_shadow_price"] == cap["shadow_price"]
        assert lp["capacity"]["planned_total"] == pytest.approx(cap["planned_total"], rel=1e-12)
        assert lp["artist"]["cap"] == cap["artist_cap"] and lp["licensor"]["cap"] == cap["licensor_cap"]
        ms = scores[(scores["market"] == market) & (scores["surface"] == s["surface"])]
        assert lp["artist"]["planned"] == pytest.approx(
            ms.loc[ms["artist_id"] == row["artist_id"], "planned_promoted_plays"].sum(), rel=1e-12)
        assert lp["licensor"]["planned"] == pytest.approx(
            ms.loc[ms["licensor_id"] == row["licensor_id"], "planned_promoted_plays"].sum(), rel=1e-12)
        assert lp["track_cap"]["planned"] == row["planned_promoted_plays"]
        assert lp["track_cap"]["cap"] == row["max_promoted_plays"]
        assert lp["track_cap"]["tight"] == bool(row["max_promoted_plays"] > 0 and row["score"] >= 1 - 1e-6)
        d = delivery[(delivery["campaign_id"] == row["campaign_id"]) & (delivery["market"] == market)
                     & (delivery["surface"] == s["surface"])]
        if len(d):
            d = d.iloc[0]
            f = lp["campaign_floor"]
            assert (f["floor"], f["planned"], f["shortfall"], f["pacing_multiplier"], f["delivered_to_date"]) == (
                d["floor"], d["planned"], d["shortfall"], d["pacing_multiplier"], d["delivered_to_date"])
        else:
            assert lp["campaign_floor"] is None


def _independent_prices(p: dict, track: str, market: str, surface: str) -> dict:
    """The duals of the track's LP, solved here from the published tables, with
    the codes looked up independently of explain."""
    sel = lambda df: df[(df["market"] == market) & (df["surface"] == surface)]  # noqa: E731
    (rb,) = yardstick.rebuild(sel(p["scores"]), sel(p["delivery"]), sel(p["capacity"]))
    sol = solve_exact(rb.problem)
    rows = sel(p["scores"]).sort_values("track_id").reset_index(drop=True)
    i = int(np.flatnonzero(rows["track_id"] == track)[0])
    artists = sorted(rows["artist_id"].unique())
    licensors = sorted(rows["licensor_id"].unique())
    return {"capacity": sol.capacity_price, "track": sol.track_price[i],
            "artist": sol.artist_price[artists.index(rows.loc[i, "artist_id"])],
            "licensor": sol.licensor_price[licensors.index(rows.loc[i, "licensor_id"])]}


def _published_price(prices: pd.DataFrame, market, surface, constraint, key) -> float:
    sel = prices[(prices["market"] == market) & (prices["surface"] == surface) & (prices["constraint"] == constraint)
                 & (prices["key"] == key)]
    assert len(sel) <= 1
    return float(sel["price"].iloc[0]) if len(sel) else 0.0


def test_the_explained_snapshot_is_certified_optimal_by_the_oracle(published):
    """The premise of the price checks below, proven without explain's solver."""
    certs = lp_oracle.certify(published["scores"], published["delivery"], published["capacity"])
    assert len(certs) == len(published["capacity"]) >= 3
    for c in certs:
        assert c.violations == [] and abs(c.gap) <= 1e-6, (c.market, c.surface, c.gap, c.violations)


def test_eligible_track_json_equals_the_published_rows(published, capsys):
    track, market = _eligible_track(published["scores"])
    doc = explain_json(capsys, published["out"], track, market)
    assert doc["snapshot_chosen"] == "LATEST" and doc["track_id"] == track and doc["market"] == market
    _assert_matches_published(doc, published, track, market)
    assert all(s["eligible"] and s["reason"] is None for s in doc["surfaces"])
    # the shrinkage check in _assert_matches_published ran for every surface (it is guarded)
    assert all(s["shrinkage"][k]["weighted_rate"] is not None for s in doc["surfaces"] for k in ("skip", "save"))
    assert not any(s["guardrail"]["disliked"] for s in doc["surfaces"])
    at_cap = [s for s in doc["surfaces"] if s["result"]["score"] >= 1 - 1e-9]
    assert at_cap and all(s["lp"]["track_cap"]["tight"] for s in at_cap)
    for s in doc["surfaces"]:
        lp = s["lp"]
        row = _row(published["scores"], track_id=track, market=market, surface=s["surface"])
        assert lp["prices_source"].startswith("published")
        for part, constraint, key in (("capacity", "capacity", ""), ("artist", "artist_cap", row["artist_id"]),
                                      ("licensor", "licensor_cap", row["licensor_id"]),
                                      ("track_cap", "track_cap", track),
                                      ("campaign_floor", "campaign_floor", row["campaign_id"])):
            got = _published_price(published["prices"], market, s["surface"], constraint, key)
            assert (lp[part] or {"shadow_price": 0.0})["shadow_price"] == got, part
        # the published prices certify the published plan: their dual bound is its objective
        pc = lp["plan_check"]
        assert pc["published_is_optimal"] and pc["dual_bound"] == pytest.approx(pc["published_objective"],
                                                                                  rel=1e-7)
        want = _independent_prices(published, track, market, s["surface"])
        assert lp["capacity"]["shadow_price"] == pytest.approx(want["capacity"], abs=1e-12)
        assert lp["artist"]["shadow_price"] == pytest.approx(want["artist"], abs=1e-12)
        assert lp["licensor"]["shadow_price"] == pytest.approx(want["licensor"], abs=1e-12)
        assert lp["track_cap"]["shadow_price"] == pytest.approx(want["track"], abs=1e-12)
        # explain's verdict on the plan agrees with the independent oracle (which proves
        # every published plan of this snapshot optimal): asserted, not assumed, so the
        # checks below cannot go vacuous
        assert lp["plan_check"]["published_is_optimal"] is True, lp["plan_check"]
        # the published capacity price is the dual of the same LP
        assert lp["capacity"]["shadow_price"] == pytest.approx(lp["capacity"]["published_shadow_price"], abs=1e-9)
        # a track at its cap has a non-negative marginal value, one at 0 a non-positive one
        if s["result"]["score"] >= 1 - 1e-9:
            assert lp["marginal_value"] >= -1e-9
        elif s["result"]["planned_promoted_plays"] == 0:
            assert lp["marginal_value"] <= 1e-9
        else:  # strictly between its bounds: the reduced cost is 0
            assert lp["marginal_value"] == pytest.approx(0.0, abs=1e-9)


def test_eligible_track_text_prints_the_published_numbers(published, capsys):
    track, market = _eligible_track(published["scores"])
    rc, text, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market,
                            "--output", published["out"])
    assert rc == 0, err
    assert published["manifest"]["snapshot_id"] in text
    sections = text.split("\n== ")[1:]
    assert [s.split()[0] for s in sections] == list(PROMOTION_SURFACES)
    scores, capacity = published["scores"], published["capacity"]
    for surface, sec in zip(PROMOTION_SURFACES, sections):
        row = _row(scores, track_id=track, market=market, surface=surface)
        cap = _row(capacity, market=market, surface=surface)
        assert "eligibility  ELIGIBLE" in sec
        assert f"window plays on {surface}: {row['plays']} " in sec
        assert f"skips {row['skips']} " in sec and f"saves {row['saves']} " in sec
        assert f"market baseline skip rate {cap['baseline_skip_rate']:.6g}" in sec
        assert f"market baseline save rate {cap['baseline_save_rate']:.6g}" in sec
        assert f"prior strength k = {cap['prior_strength_skip']:.6g}" in sec
        assert f"toward m = {cap['prior_mean_skip']:.6g}" in sec
        assert f"shrunk skip_rate {row['skip_rate']:.6g}" in sec
        assert f"shrunk save_rate {row['save_rate']:.6g}" in sec
        assert f"= {row['value']:.6g}\n" in sec  # value = save lift - lambda x skip lift = v
        assert f"E = {row['supply_forecast']:.6g} " in sec and f"rho*E = {row['max_promoted_plays']:.6g}" in sec
        assert f"of K = {cap['capacity']:.6g}" in sec and f"(published {cap['shadow_price']:.6g})" in sec
        assert (f"planned promoted plays x = {row['planned_promoted_plays']:.6g}, boost probability "
                f"min(1, x/(E*g)) = {row['boost_probability']:.6g} with serving gain g = {cap['serving_gain']:.6g}, "
                f"score x/(rho*E) = {row['score']:.6g}") in sec
        if row["score"] >= 1 - 1e-9:
            assert "x = rho*E: BINDS" in sec


def test_ineligible_tracks_give_the_reason_in_words(published, capsys):
    scores = published["scores"]
    cfg = published["manifest"]["config"]
    # the guardrail: explain's probability, derived from the published columns, agrees with the reason
    track, market = _ineligible_track(scores, "listeners_dislike")
    doc = explain_json(capsys, published["out"], track, market)
    _assert_matches_published(doc, published, track, market)
    for s in doc["surfaces"]:
        assert not s["eligible"] and s["reason"] == "listeners_dislike"
        assert s["guardrail"]["disliked"] and s["guardrail"]["reason"] == "listeners_dislike"
        assert s["guardrail"]["probability"] > cfg["guardrail_confidence"]   # no previous snapshot: no hysteresis
        assert "listener guardrail" in s["reason_text"]
        assert s["result"] == {"planned_promoted_plays": 0.0, "boost_probability": 0.0, "score": 0.0,
                               "serving_gain": 1.0}
        assert s["lp"]["track_cap"]["cap"] == 0.0

    # too few plays: the text names the count and the threshold
    track, market = _ineligible_track(scores, "too_few_plays")
    mine = scores[(scores["track_id"] == track) & (scores["market"] == market)]
    surface = sorted(mine.loc[mine["reason"] == "too_few_plays", "surface"])[0]
    other = next(x for x in PROMOTION_SURFACES if x != surface)
    rc, text, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market,
                            "--output", published["out"], "--surface", surface)
    assert rc == 0, err
    plays = mine["plays"].sum()
    assert plays < cfg["min_window_plays"]
    assert "NOT ELIGIBLE" in text and f"== {surface}" in text and f"== {other}" not in text
    assert (f"too few plays: {plays} plays on the promotion surfaces of {market} in the window; "
            f"at least {cfg['min_window_plays']} are needed") in text
    assert "not in the LP" in text
    # an ineligible row gets its reason and no LP: none of the LP's constraint lines
    assert "allocation   not in the" in text and "an ineligible row is fixed at x = 0 (too_few_plays)" in text
    assert "  capacity   sum x" not in text and "  floor      " not in text and "  marginal" not in text


def test_snapshot_choice_and_surface_filter(published, capsys):
    track, market = _eligible_track(published["scores"])
    sid = published["manifest"]["snapshot_id"]
    doc = explain_json(capsys, published["out"], track, market.lower(), "--snapshot", sid, "--surface", "mixes")
    assert doc["snapshot_chosen"] == "requested with --snapshot" and doc["market"] == market
    assert [s["surface"] for s in doc["surfaces"]] == ["mixes"]
    _row(published["scores"], track_id=track, market=market, surface="mixes")  # exists
    assert doc["surfaces"][0]["result"]["score"] == _row(published["scores"], track_id=track, market=market,
                                                         surface="mixes")["score"]


def test_bad_requests_are_clear_errors(published, capsys):
    out = published["out"]
    track, market = _eligible_track(published["scores"])
    sid = published["manifest"]["snapshot_id"]

    rc, stdout, err = explain(capsys, "--date", SCORE_DATE, "--track", "trk-does-not-exist", "--market", market,
                              "--output", out)
    assert rc == 1 and stdout == ""
    assert err.startswith("oasis explain: error: ") and "trk-does-not-exist" in err and sid in err
    assert "Traceback" not in err

    rc, stdout, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", "ZZ", "--output", out)
    assert rc == 1 and stdout == ""
    assert "market ZZ has no rows" in err and market in err

    # a track of the snapshot asked about in a market it is not enrolled in (the world has one)
    scores = published["scores"]
    markets = set(scores["market"])
    lonely = sorted((t, sorted(markets - set(g["market"]))[0]) for t, g in scores.groupby("track_id")
                    if set(g["market"]) != markets)
    assert lonely, "the small world has no track enrolled in one market only"
    t, other = lonely[0]
    rc, _, err = explain(capsys, "--date", SCORE_DATE, "--track", t, "--market", other, "--output", out)
    assert rc == 1 and f"not enrolled in {other}" in err

    # --date is the score date: the last day of logs is a clear error with the fix
    rc, _, err = explain(capsys, "--date", DAY, "--track", track, "--market", market, "--output", out)
    assert rc == 1 and f"no published snapshot for score date {DAY}" in err and f"did you mean {SCORE_DATE}" in err

    rc, _, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market, "--output", out,
                         "--snapshot", "20990101T000000Z-000000")
    assert rc == 1 and "no published or quarantined snapshot 20990101T000000Z-000000" in err


def test_prices_come_from_the_snapshot_without_solving(published, capsys, monkeypatch, tmp_path):
    """explain never solves a snapshot that has a prices table; one published
    before the table existed (format 2, no prices) is solved for the same prices."""
    track, market = _eligible_track(published["scores"])

    def no_solving(problem):
        raise AssertionError("explain solved an LP although the snapshot publishes its prices")

    monkeypatch.setattr(explain_module, "solve_exact", no_solving)
    doc = explain_json(capsys, published["out"], track, market)
    monkeypatch.undo()

    old = str(tmp_path / "out")
    shutil.copytree(os.path.join(published["out"], "snapshots"), os.path.join(old, "snapshots"))
    (snap,) = worlds.snapshot_dirs(old)
    manifest = worlds.manifest(snap)
    del manifest["tables"]["prices"], manifest["valid_until"]
    manifest["format_version"] = 2
    with open(os.path.join(snap, "_MANIFEST.json"), "w") as f:
        json.dump(manifest, f)
    shutil.rmtree(os.path.join(snap, "prices"))
    older = explain_json(capsys, old, track, market)
    for new_s, old_s in zip(doc["surfaces"], older["surfaces"]):
        assert old_s["lp"]["prices_source"].startswith("derived")
        for part in ("capacity", "artist", "licensor", "track_cap"):
            assert old_s["lp"][part]["shadow_price"] == pytest.approx(new_s["lp"][part]["shadow_price"], abs=1e-9)
        assert old_s["lp"]["marginal_value"] == pytest.approx(new_s["lp"]["marginal_value"], abs=1e-9)


def test_the_logs_date_of_latest_given_as_a_score_date_is_noted(published, capsys, tmp_path):
    """With snapshots for score dates D and D+1, `explain --date D` right after
    `oasis run --date D` silently explained the older snapshot; now it still
    does (D is a valid score date) but says on stderr that D is LATEST's logs date."""
    import shutil

    out = shutil.copytree(published["out"], str(tmp_path / "out"))
    older = (worlds.END - dt.timedelta(days=1)).isoformat()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["run", "--date", older, "--input", published["world"], "--output", out]) == 0
    track, market = _eligible_track(published["scores"])
    _, _, err = explain(capsys, "--date", DAY, "--track", track, "--market", market, "--output", out)
    assert (f"oasis explain: note: {DAY} is the LOGS date of LATEST (score date {SCORE_DATE}); --date is the score "
            f"date, so this explains score date {DAY}") in err
    rc, _, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market, "--output", out)
    assert rc == 0 and "note:" not in err
