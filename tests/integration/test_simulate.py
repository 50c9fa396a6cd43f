"""The closed loop (`oasis simulate`) on a small world: every published plan
drives the next day's plays, and what the runs measure recovers what the
simulator planted (docs/design.md §4, §5; `jobs.simulate.figures` says what each
figure is). The full-size check (6 markets x 3 surfaces, 31 days) is `make
simulate`.

One world, two simulations of it (module fixtures, about 15 daily runs in
all): 12 days with calibration on, interrupted after day 4 and resumed, and
the same world's first 3 days with calibration off. The planted step change of
the serving gain (x0.6) is on day 8.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import layout
from jobs.run import daily, summary
from jobs.run.options import RunOptions
from jobs.simulate import figures as sim_figures
from jobs.simulate.loop import Simulation, SimulationError, SimulationRequest, simulate
from jobs.simulate.serving import plan_boosts
from jobs.simulate.truth import TruthParams
from jobs.snapshots import store
from pipelines.config import Config

# the first test pays for the module's two simulations (about 15 daily runs: 155 s on an idle 2-core machine,
# over 300 s when the machine is busy), so the module gets the same headroom as the other long-fixture modules
pytestmark = pytest.mark.timeout(600)

START = dt.date(2026, 11, 19)      # warm-up 11-05..11-18; November's flights end on day 12 (11-30)
# the last run publishes December's first scores: its flights change the eligible scores' distribution by a PSI
# of about 0.26 (score_drift's bound is 0.25), so the runs skip that gate, as an engineer would after checking
# 14 warm-up days: the supply forecast fits the planted weekday factors (+-15%) from 14 observed days on; with 7
# it had none on days 1-7, and BR mixes on its +8%/+15% weekdays delivered 1.19 and 1.18 of its plan on days 6-7,
# two missed days, so the delivery gate rightly fired there too (measured on seed 3)
WORLD = dict(warm_up_days=14, start=START, markets=2, tracks=100, events_per_day=250_000, seed=3,
             truth=TruthParams(step_day=8), skip_gates=("score_drift",))


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def sim_on(tmp_path_factory):
    """12 days, calibration on; interrupted once the engagement of day 4 is
    written (before its run), with a half-written day 5 left in staging, then
    resumed by the same call."""
    out = str(tmp_path_factory.mktemp("simulate") / "on")
    req = SimulationRequest(out=out, days=12, **WORLD)

    def stop_after_day_4(rec):
        if rec.phase == "loop" and rec.day == START + dt.timedelta(days=3):
            stage = layout.staging_day_dir(layout.simulation_world(out), START + dt.timedelta(days=4))
            os.makedirs(os.path.join(stage, "engagement"))
            with open(os.path.join(stage, "engagement", "part-00000.parquet"), "wb") as f:
                f.write(b"PAR1 half a file")
            raise Interrupted()

    with pytest.raises(Interrupted):
        simulate(req, progress=lambda message: None, on_day=stop_after_day_4)
    lines = []
    result = simulate(req, progress=lines.append)
    return result, lines, sim_figures.measure(out)


@pytest.fixture(scope="module")
def sim_off(tmp_path_factory):
    """The same world's first 3 days with calibration off (its step, on day
    8, lies past them: no step is simulated)."""
    out = str(tmp_path_factory.mktemp("simulate") / "off")
    simulate(SimulationRequest(out=out, days=3, calibration=False, **WORLD), progress=lambda message: None)
    return sim_figures.measure(out, gain_day=3, delivery_from=1)


def test_a_resumed_simulation_continues_where_it_stopped(sim_on):
    result, lines, _ = sim_on
    by_phase = {}
    for rec in result.days:
        by_phase.setdefault((rec.phase, rec.written), []).append(rec.day)
    assert len(by_phase[("warm-up", False)]) == WORLD["warm_up_days"]   # written before the interruption
    assert by_phase[("loop", False)] == [START + dt.timedelta(days=i) for i in range(4)]
    assert by_phase[("loop", True)] == [START + dt.timedelta(days=i) for i in range(4, 12)]
    assert any("already written" in line for line in lines) and "final run" in lines[-1]
    assert not os.path.exists(layout.staging_day_dir(result.input_root, START + dt.timedelta(days=4)))
    # 12 days publish 13 consecutive snapshots, each reconciling the day before with its plan
    snaps = {m.score_date: m for _, m in store.list_manifests(result.output_root)}
    assert sorted(snaps) == [START + dt.timedelta(days=i) for i in range(13)]
    for d, m in snaps.items():
        if d > START:
            assert m.inputs.previous == {"snapshot_id": snaps[d - dt.timedelta(days=1)].snapshot_id,
                                         "score_date": str(d - dt.timedelta(days=1)), "plan_reconciled": True}


def test_resuming_with_other_arguments_is_refused(sim_on):
    result = sim_on[0]
    before = os.path.getmtime(os.path.join(result.sim_dir, layout.SIMULATION_RECORD))
    with pytest.raises(SimulationError, match=r"other arguments \(seed\)"):
        simulate(SimulationRequest(out=result.sim_dir, days=12, **(WORLD | {"seed": 4})),
                 progress=lambda message: None)
    assert os.path.getmtime(os.path.join(result.sim_dir, layout.SIMULATION_RECORD)) == before


def test_the_serving_gain_is_recovered_by_day_7(sim_on):
    """serving_response, realised promoted plays over b times the boosted
    rows' realised organic plays, is serving's own gain: within 5% of the
    planted g by day 7. The applied gain is not g and must not be: it is
    fitted so that delivery meets the plan, so it also takes in the
    forecast's bias on the boosted rows (E over their realised organic
    plays, forecast_over: 1.05-1.17 here; promotion displaces organic plays,
    so a track boosted harder or longer than in its history plays fewer
    than its forecast, and the forecast's per-track trend adds a few
    percent on the sparse tracks), and it is g / forecast_over. Catches:
    serving_response computed over E (its errors would be the applied
    estimate's, 4-12% low), an applied estimate that leaves the forecast's
    bias out (it would be serving_response: 5-16% above g / forecast_over),
    and a simulator that serves at another gain than it planted."""
    f = sim_on[2]
    print("\n" + sim_figures.render(f))
    assert f.planned_per_day_min >= 200
    assert f.response_within >= 0.9, f.gain.to_string()
    assert (f.gain["forecast_over"] > 1).all(), f.gain.to_string()
    absorbed = f.gain["estimate"] / (f.gain["planted"] / f.gain["forecast_over"]) - 1
    assert (absorbed.abs() <= f.gain_tolerance).mean() >= 0.9, f.gain.assign(absorbed=absorbed).to_string()
    assert f.gain["applied"].tolist() == f.gain["estimate"].tolist()


def test_delivery_meets_the_plan_from_day_7_and_misses_it_without_calibration(sim_on, sim_off):
    on, off = sim_on[2], sim_off
    print(f"\ncalibration on, days 7-12: median |realised/planned - 1| = {on.delivery_median:.2%}")
    print(f"calibration off, days 1-3: median |realised/planned - 1| = {off.delivery_median:.2%}")
    print(off.delivery.merge(off.gain[["market", "surface", "planted", "estimate"]]).to_string())
    # measured on seed 3: 2.96% on, 16.6% off (the planted |g - 1| has a median of 0.25; without calibration the
    # forecast's bias on the boosted rows, E about 1.04-1.13 of their organic plays, takes a little of it back)
    assert on.delivery_median <= 0.05
    assert off.delivery_median >= max(0.10, 3 * on.delivery_median)
    # the miss is the planted gain's: realised / planned ranks the (market, surface) as g does and is within
    # ~10% of g (the rest is displacement: a gain above 1 boosts harder, so fewer organic plays are left)
    miss = off.delivery.merge(off.gain[["market", "surface", "planted", "estimate", "applied"]])
    assert miss["ratio"].rank().tolist() == miss["planted"].rank().tolist(), miss.to_string()
    assert (miss["ratio"] / miss["planted"] - 1).abs().median() <= 0.10
    # with calibration off the estimate is still made and published (it moved from 1 toward g), but not applied
    assert (miss["applied"] == 1.0).all()
    assert (np.sign(miss["estimate"] - 1) == np.sign(miss["planted"] - 1)).all()


def test_campaigns_get_their_floors_and_stay_in_their_pacing_clip(sim_on):
    """November's campaigns end on day 12. Those whose plan met their floor
    every day got at least 95% of those floors in realised plays, but in the
    (market, surface) whose serving gain was cut by 40% four days before the
    flight's end (the figures keep it apart: it is the planted failure the
    delivery gate flags)."""
    f = sim_on[2]
    print("\n" + f.floors.sort_values("share").head(5).to_string())
    print(f.floors_stepped.sort_values("share").head(5).to_string())
    assert f.pacing_violations == 0
    assert len(f.floors) >= 40
    assert f.floors_met_share >= 0.95


def test_reconciled_realised_plays_are_the_aggregates_promoted_plays(sim_on):
    f = sim_on[2]
    assert f.sums_checked > 1000 and f.sums_mismatched == 0


def test_pacing_counts_the_realised_promoted_plays(sim_on):
    """A campaign's delivered_to_date grows, from one score date to the next, by
    its tracks' realised promoted plays of the day in between (the logs), not
    by what the plan asked for: a wrong basis breaks the equality wherever
    realised and planned differ (the planted gains are not 1). Campaigns whose
    set of tracks changed between the two dates (a track whose enrollment for
    the next month took over) are left out: their sum is over other tracks."""
    result = sim_on[0]
    snaps = {m.score_date: (folder, m) for folder, m in store.list_manifests(result.output_root)}

    def table(day, name):
        folder, m = snaps[day]
        return store.read_snapshot_tables(folder, m)[name].to_pandas()

    def tracks(day):
        s = table(day, "promotion_scores")
        return s.groupby(["campaign_id", "market", "surface"])["track_id"].agg(frozenset)

    checked = 0
    key = ["campaign_id", "market", "surface"]
    for day in (START + dt.timedelta(days=5), START + dt.timedelta(days=9)):
        after_day = day + dt.timedelta(days=1)
        before, after = table(day, "campaign_delivery"), table(after_day, "campaign_delivery")
        recon = table(after_day, "delivery_reconciliation").dropna(subset=["campaign_id"])
        realised = recon.groupby(key)["realised_promoted_plays"].sum()
        planned = recon.groupby(key)["planned_promoted_plays"].sum()
        j = before.merge(after, on=key, suffixes=("_before", "_after")).set_index(key)
        same = tracks(day).reindex(j.index) == tracks(after_day).reindex(j.index)
        j = j[same.to_numpy()]
        grown = j["delivered_to_date_after"] - j["delivered_to_date_before"]
        assert grown.to_numpy() == pytest.approx(realised.reindex(j.index).fillna(0).to_numpy())
        differs = (realised - planned).abs().reindex(j.index).fillna(0) > 1
        assert differs.sum() >= 10
        checked += len(j)
    assert checked >= 50


def test_the_delivery_gate_fires_after_the_step_only_where_it_was(sim_on):
    result, _, f = sim_on
    step = f.step
    assert f.gate_first_after_step is not None and 0 <= f.gate_delay_days <= 3
    settled = f.gate[(f.gate["day"] >= f.loop_days[6]) & f.gate["firing"]]
    assert set(zip(settled["market"], settled["surface"])) == {(step["market"], step["surface"])}
    # recorded as a warning in the manifests of those days, which still published
    assert set(settled["day"]) <= set(f.gate_manifest_days)
    snaps = {m.as_of: (folder, m) for folder, m in store.list_manifests(result.output_root)}
    folder, m = snaps[f.gate_first_after_step]
    gate = next(r for r in m.validation if r.name == "delivery")
    assert gate.warning and not gate.blocking and m.gates_passed
    assert f"{step['market']} {step['surface']}" in gate.detail
    run = daily.RunResult("published", m, folder, True, 1.0, store.read_snapshot_tables(folder, m))
    text = summary.render(run, "warehouse")
    assert "WARNING (delivery)" in text and "WARNING from delivery" in text
    with open(os.path.join(folder, layout.REPORT)) as fh:
        page = fh.read()
    assert "WARNING from the delivery gate" in page and "id='plot-planned-delivered'" in page
    assert page.count("class='mark realised'") > 12


def test_the_gate_can_be_made_to_fail_the_run_and_skipped_by_hand(sim_on, tmp_path):
    result, _, f = sim_on
    out = str(tmp_path / "out")
    shutil.copytree(result.output_root, out)
    config = tmp_path / "blocks.toml"
    cfg = Config.load(layout.simulation_config(result.sim_dir)).to_dict() | {"gate_delivery_blocks": 1}
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items()))
    latest = store.read_latest(out).content
    req = daily.RunRequest(as_of=f.gate_first_after_step, input_root=result.input_root, output_root=out,
                           config_path=str(config))
    with pytest.raises(daily.RunFailed, match="validation failed \\(delivery\\)"):
        daily.run(req, progress=lambda message: None)
    assert store.read_latest(out).content == latest
    assert os.listdir(os.path.join(out, "quarantine"))
    req.options = RunOptions(skip_gates=("delivery",))
    published = daily.run(req, progress=lambda message: None)
    assert published.status == "published" and published.manifest.skipped_gates == ["delivery"]


def test_rerunning_a_simulated_day_gives_identical_content(sim_on):
    """The runs and the simulator are deterministic: a forced rerun of day 10's
    daily job publishes the same content fingerprints, and day 6's plays
    generated again from its published plan are the files written."""
    result = sim_on[0]
    day = START + dt.timedelta(days=9)
    before = {m.as_of: m for _, m in store.list_manifests(result.output_root)}[day]
    req = daily.RunRequest(as_of=day, input_root=result.input_root, output_root=result.output_root,
                           config_path=layout.simulation_config(result.sim_dir), options=RunOptions(force=True))
    again = daily.run(req, progress=lambda message: None).manifest
    assert again.snapshot_id != before.snapshot_id
    assert {n: t.content_sha256 for n, t in again.tables.items()} == \
        {n: t.content_sha256 for n, t in before.tables.items()}

    sim = Simulation(SimulationRequest(out=result.sim_dir, days=12, **WORLD), progress=lambda message: None)
    sim.prepare()
    d6 = START + dt.timedelta(days=5)
    folder, m = next((fo, m) for fo, m in store.list_manifests(result.output_root) if m.score_date == d6)
    served = sim.serve(d6, plan_boosts(sim.world, sim.enrollments, sim.truth,
                                      sim.plan(daily.RunResult("published", m, folder)), d6))
    written = pq.read_table(layout.input_partition(result.input_root, "engagement", d6))
    assert written.select(served.events.column_names).equals(served.events)


def test_the_warehouse_holds_every_reconciled_day(sim_on):
    result = sim_on[0]
    con = duckdb.connect(layout.default_warehouse_path(result.output_root), read_only=True)
    try:
        days = con.sql("SELECT score_date, count(DISTINCT snapshot_id) AS n, sum(realised_promoted_plays) AS r "
                       "FROM delivery_reconciliation GROUP BY 1 ORDER BY 1").fetchall()
        latest = con.sql("SELECT DISTINCT score_date FROM delivery_reconciliation_latest").fetchall()
        gain = con.sql("SELECT count(*) FROM capacity WHERE serving_gain <> 1.0").fetchone()[0]
    finally:
        con.close()
    assert [d for d, _, _ in days][-12:] == [START + dt.timedelta(days=i) for i in range(12)]
    assert all(n == 1 and r > 0 for _, n, r in days)
    assert latest == [(START + dt.timedelta(days=11),)] and gain > 0
