"""`oasis explain` end to end: one small world published once, then explain
an eligible and an ineligible track through the real CLI; every number it
prints must be the published one."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json

import numpy as np
import pandas as pd
import pytest

from jobs.cli import main as cli
from pipelines.allocation.exact import solve_exact
from pipelines.allocation import verify as yardstick
from schemas import PROMOTION_SURFACES
from tests.support import worlds

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
    return {"out": out, "snap": snap, "manifest": worlds.manifest(snap),
            "scores": worlds.table(snap, "promotion_scores"), "delivery": worlds.table(snap, "campaign_delivery"),
            "capacity": worlds.table(snap, "capacity")}


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
            # the derived decay-weighted rate shrinks back to the published rate
            if h["weighted_rate"] is not None:
                w, k, mu = h["weighted_plays"], h["prior_strength"], h["baseline_rate"]
                assert (h["weighted_rate"] * w + mu * k) / (w + k) == pytest.approx(row[f"{kind}_rate"], abs=1e-12)
        v = s["value"]
        assert v["value"] == row["value"] and v["lambda"] == cfg["skip_penalty"]
        assert v["save_lift"] - v["lambda"] * v["skip_lift"] == pytest.approx(row["value"], abs=1e-12)
        assert s["supply"]["supply_forecast"] == row["supply_forecast"]
        assert s["supply"]["max_promoted_plays"] == row["max_promoted_plays"]
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


def test_eligible_track_json_equals_the_published_rows(published, capsys):
    track, market = _eligible_track(published["scores"])
    doc = explain_json(capsys, published["out"], track, market)
    assert doc["snapshot_chosen"] == "LATEST" and doc["track_id"] == track and doc["market"] == market
    _assert_matches_published(doc, published, track, market)
    assert all(s["eligible"] and s["reason"] is None for s in doc["surfaces"])
    assert not any(s["guardrail"]["disliked"] for s in doc["surfaces"])
    at_cap = [s for s in doc["surfaces"] if s["result"]["score"] >= 1 - 1e-9]
    assert at_cap and all(s["lp"]["track_cap"]["tight"] for s in at_cap)
    for s in doc["surfaces"]:
        lp = s["lp"]
        want = _independent_prices(published, track, market, s["surface"])
        assert lp["capacity"]["shadow_price"] == pytest.approx(want["capacity"], abs=1e-12)
        assert lp["artist"]["shadow_price"] == pytest.approx(want["artist"], abs=1e-12)
        assert lp["licensor"]["shadow_price"] == pytest.approx(want["licensor"], abs=1e-12)
        assert lp["track_cap"]["shadow_price"] == pytest.approx(want["track"], abs=1e-12)
        if lp["plan_check"]["published_is_optimal"]:
            # the published capacity price is the dual of the same LP
            assert lp["capacity"]["shadow_price"] == pytest.approx(lp["capacity"]["published_shadow_price"],
                                                                   abs=1e-9)
        # a track at its cap has a non-negative marginal value, one at 0 a non-positive one
        if s["result"]["score"] >= 1 - 1e-9 and lp["plan_check"]["published_is_optimal"]:
            assert lp["marginal_value"] >= -1e-9
        if s["result"]["planned_promoted_plays"] == 0 and lp["plan_check"]["published_is_optimal"]:
            assert lp["marginal_value"] <= 1e-9


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
        assert s["guardrail"]["disliked"]
        assert max(s["guardrail"]["probability_surface"], s["guardrail"]["probability_pooled"]) > \
            cfg["guardrail_confidence"]
        assert "listener guardrail" in s["reason_text"]
        assert s["result"] == {"planned_promoted_plays": 0.0, "boost_probability": 0.0, "score": 0.0,
                               "serving_gain": 1.0}
        assert s["lp"]["track_cap"]["cap"] == 0.0

    # too few plays: the text names the count and the threshold
    track, market = _ineligible_track(scores, "too_few_plays")
    rc, text, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market,
                            "--output", published["out"], "--surface", "radio")
    assert rc == 0, err
    plays = scores[(scores["track_id"] == track) & (scores["market"] == market)]["plays"].sum()
    assert plays < cfg["min_window_plays"]
    assert "NOT ELIGIBLE" in text and "== radio" in text and "== mixes" not in text
    assert (f"too few plays: {plays} plays on the promotion surfaces of {market} in the window; "
            f"at least {cfg['min_window_plays']} are needed") in text
    assert "not in the LP" in text


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

    other = sorted(set(published["scores"]["market"]) - {market})[0]
    enrolled = set(published["scores"].loc[published["scores"]["track_id"] == track, "market"])
    if other not in enrolled:
        rc, _, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", other, "--output", out)
        assert rc == 1 and f"not enrolled in {other}" in err

    # --date is the score date: the last day of logs is a clear error with the fix
    rc, _, err = explain(capsys, "--date", DAY, "--track", track, "--market", market, "--output", out)
    assert rc == 1 and f"no published snapshot for score date {DAY}" in err and f"did you mean {SCORE_DATE}" in err

    rc, _, err = explain(capsys, "--date", SCORE_DATE, "--track", track, "--market", market, "--output", out,
                         "--snapshot", "20990101T000000Z-000000")
    assert rc == 1 and "no published snapshot 20990101T000000Z-000000" in err
