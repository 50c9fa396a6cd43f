"""What a simulation measured against what it planted (`oasis simulate` prints
it; the tests and `make simulate` assert on it). Day k is the k-th simulated
day; the snapshot *of* day k is the one published for score date k (its plan
drove day k), and day k's reconciliation is in the snapshot of day k+1.

* gain: per (market, surface), the serving-gain estimate published for day
  `gain_day` (7: six reconciled days) against the planted g of the day
  before, and the share within `gain_tolerance` of it; the same for
  serving_response (the estimate over the realised organic plays, without
  the forecast's bias on the boosted rows); and that bias, forecast_over
  (sum(b E) / sum(b O) on the boosted rows, decay-weighted as the estimate:
  the applied estimate is about serving_response / forecast_over, which is
  what makes delivery meet the plan);
* delivery: per (market, surface), realised over planned promoted plays
  summed over days `delivery_from`.. (7..), and the median over (market,
  surface) of |ratio - 1|; also the median over every (market, surface, day);
* floors: per (campaign, market, surface) whose flight ends inside the
  simulation and whose floor was met by the plan (no shortfall) on every
  simulated day of its flight: realised promoted plays over the floors of
  those days (the stepped (market, surface) apart when its step falls inside
  the flight: serving's planted failure there is not the plan's to make up);
  and the campaign-days whose pacing multiplier left its clip [pacing_min,
  pacing_max] or whose floor exceeds pacing_max times its base;
* sums: (track, market, surface, day) whose realised promoted plays in the
  reconciliation differ from the stored daily aggregates' promoted plays;
* gate: the days each (market, surface) had the delivery gate firing
  (delivery_miss_days >= gate_delivery_days), the first such day of the
  stepped (market, surface) from its step day on, and where else it fired:
  from day `delivery_from` on (calibration settled), and before (the planted
  gain's miss until calibration catches up with it, a real miss too).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from jobs import layout
from jobs.run import aggregates
from jobs.snapshots import store
from pipelines import storage
from pipelines.config import Config

KEY = ["market", "surface"]


@dataclass
class Figures:
    loop_days: list[dt.date]
    step: dict                   # market, surface, day (date), factor
    calibration: bool
    gain: pd.DataFrame           # market, surface, planted, estimate, applied, error, serving_response,
    #                              response_error, forecast_over
    gain_within: float           # share of (market, surface) with |error| <= gain_tolerance
    response_within: float       # the same for serving_response
    gain_tolerance: float
    gain_day: int
    delivery: pd.DataFrame       # market, surface, planned, realised, ratio
    delivery_median: float       # median over (market, surface) of |ratio - 1|, days delivery_from..
    delivery_daily_median: float  # median over (market, surface, day) of |ratio - 1|
    delivery_from: int
    planned_per_day_min: float   # the smallest (market, surface)'s mean planned promoted plays a day
    floors: pd.DataFrame         # campaign_id, market, surface, flight_end, floor, realised, share (step pair apart)
    floors_met_share: float      # share of those with realised >= 0.95 floor
    floors_stepped: pd.DataFrame  # the same for the stepped (market, surface) when the step is inside the flight
    pacing_violations: int
    sums_checked: int
    sums_mismatched: int
    gate: pd.DataFrame           # market, surface, day (reconciled), firing
    gate_first_after_step: dt.date | None
    gate_elsewhere: list[str]    # "market surface day" where it fired off the stepped pair, from delivery_from on
    gate_startup: list[str]      # the same before delivery_from (calibration catching up with the planted gain)
    gate_manifest_days: list[dt.date]  # reconciled days whose manifest records a failed delivery gate

    @property
    def gate_delay_days(self) -> int | None:
        if self.gate_first_after_step is None:
            return None
        return (self.gate_first_after_step - self.step["day"]).days


def measure(sim_dir: str, *, gain_day: int = 7, delivery_from: int = 7, gain_tolerance: float = 0.05) -> Figures:
    world, out = layout.simulation_world(sim_dir), layout.simulation_output(sim_dir)
    with open(layout.truth_file(world, "simulation.json")) as f:
        record = json.load(f)
    start, days = dt.date.fromisoformat(record["loop_start"]), record["identity"]["days"]
    loop_days = [start + dt.timedelta(days=i) for i in range(days)]
    cfg = Config.from_mapping(record["identity"]["config"])
    step = dict(record["truth"]["step"], day=dt.date.fromisoformat(record["truth"]["step"]["day"]))
    planted = pq.read_table(layout.truth_file(world, "serving_gain.parquet")).to_pandas()
    snaps = _snapshots(out)
    capacity = _table(snaps, "capacity")
    recon = _table(snaps, "delivery_reconciliation")
    campaigns = _table(snaps, "campaign_delivery")
    recon = recon[recon["score_date"].isin(loop_days)]

    gain = _gain(capacity, planted, loop_days, gain_day)
    within = float((gain["error"].abs() <= gain_tolerance + 1e-12).mean()) if len(gain) else 0.0
    response_within = (float((gain["response_error"].abs() <= gain_tolerance + 1e-12).mean()) if len(gain)
                       else 0.0)
    late = recon[recon["score_date"] >= loop_days[min(delivery_from, len(loop_days)) - 1]]
    per_pair = late.groupby(KEY)[["planned_promoted_plays", "realised_promoted_plays"]].sum().reset_index()
    per_pair.columns = KEY + ["planned", "realised"]
    per_pair["ratio"] = per_pair["realised"] / per_pair["planned"]
    daily = late.groupby(KEY + ["score_date"])[["planned_promoted_plays", "realised_promoted_plays"]].sum()
    daily_ratio = daily["realised_promoted_plays"] / daily["planned_promoted_plays"]
    planned_per_day = recon.groupby(KEY + ["score_date"])["planned_promoted_plays"].sum().groupby(KEY).mean()
    floors, violations = _floors(campaigns, recon, loop_days, cfg)
    hit = ((floors["market"] == step["market"]) & (floors["surface"] == step["surface"])
           & (floors["flight_end"] >= step["day"])) if len(floors) else np.zeros(0, dtype=bool)
    floors, stepped = floors[~hit].reset_index(drop=True), floors[hit].reset_index(drop=True)
    checked, mismatched = _sums(out, recon, loop_days)
    settled = loop_days[min(delivery_from, len(loop_days)) - 1]
    gate, first, elsewhere, startup = _gate(capacity, loop_days, step, cfg, settled)
    failed_days = [m.as_of for m in snaps.values() if m.as_of in loop_days
                   and any(r.name == "delivery" and not r.passed for r in m.validation)]
    return Figures(
        loop_days=loop_days, step=step, calibration=bool(cfg.calibrate_serving_gain), gain=gain,
        gain_within=within, response_within=response_within, gain_tolerance=gain_tolerance, gain_day=gain_day,
        delivery=per_pair,
        delivery_median=float((per_pair["ratio"] - 1).abs().median()) if len(per_pair) else float("nan"),
        delivery_daily_median=float((daily_ratio - 1).abs().median()) if len(daily_ratio) else float("nan"),
        delivery_from=delivery_from,
        planned_per_day_min=float(planned_per_day.min()) if len(planned_per_day) else 0.0,
        floors=floors, floors_met_share=float((floors["share"] >= 0.95).mean()) if len(floors) else float("nan"),
        floors_stepped=stepped,
        pacing_violations=violations, sums_checked=checked, sums_mismatched=mismatched, gate=gate,
        gate_first_after_step=first, gate_elsewhere=elsewhere, gate_startup=startup,
        gate_manifest_days=sorted(failed_days))


def _snapshots(out: str) -> dict:
    """The newest published snapshot of each score date: {score_date: manifest}, with `.folder` set."""
    found = {}
    for folder, m in store.list_manifests(out):
        m.folder = folder
        found[m.score_date] = m          # oldest first: the newest of a date wins
    return found


def _table(snaps: dict, name: str) -> pd.DataFrame:
    parts = []
    for m in snaps.values():
        files = [layout.listed_file(m.folder, f.path) for f in m.table_files(name)]
        if files:
            parts.append(store.read_table_files(files, name).to_pandas())
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _gain(capacity: pd.DataFrame, planted: pd.DataFrame, loop_days: list[dt.date], gain_day: int) -> pd.DataFrame:
    """The estimate published for day `gain_day` against the gain of the day before (what it measured)."""
    k = min(gain_day, len(loop_days))
    day = loop_days[k - 1]
    est = capacity[capacity["score_date"] == day][KEY + ["serving_gain_estimate", "serving_gain", "serving_response",
                                                         "gain_requested", "gain_requested_organic"]]
    truth_day = loop_days[max(k - 2, 0)]
    g = planted[planted["day"] == truth_day][KEY + ["gain"]]
    out = g.merge(est, on=KEY, how="left").rename(columns={"gain": "planted", "serving_gain_estimate": "estimate",
                                                          "serving_gain": "applied"})
    out["error"] = out["estimate"] / out["planted"] - 1.0
    out["response_error"] = out["serving_response"] / out["planted"] - 1.0
    # the forecast's bias on the boosted rows behind the estimate: decay-weighted sum(b E) / sum(b O), O the
    # realised organic plays; the applied estimate is about serving_response / forecast_over
    out["forecast_over"] = out.pop("gain_requested") / out.pop("gain_requested_organic")
    return out.sort_values(KEY).reset_index(drop=True)


def _floors(campaigns: pd.DataFrame, recon: pd.DataFrame, loop_days: list[dt.date], cfg: Config):
    c = campaigns[campaigns["score_date"].isin(loop_days)].copy()
    tol = 1e-9
    base = cfg.floor_fraction * c["max_boost"]
    mult = c["pacing_multiplier"]
    violations = int(((mult < cfg.pacing_min - tol) | (mult > cfg.pacing_max + tol)
                      | (c["floor"] > cfg.pacing_max * base * (1 + 1e-9) + tol)).sum())
    key = ["campaign_id", "market", "surface"]
    ends = c[c["flight_end"] <= loop_days[-1]]
    per = ends.groupby(key).agg(flight_end=("flight_end", "max"), floor=("floor", "sum"),
                                shortfall=("shortfall", "max"), days=("score_date", "nunique")).reset_index()
    feasible = per[per["shortfall"] <= 1e-6]
    got = recon.dropna(subset=["campaign_id"]).groupby(key)["realised_promoted_plays"].sum().rename("realised")
    feasible = feasible.merge(got.reset_index(), on=key, how="left").fillna({"realised": 0})
    feasible = feasible[feasible["floor"] > 0]
    feasible["share"] = feasible["realised"] / feasible["floor"]
    return feasible.sort_values(key).reset_index(drop=True), violations


def _sums(out: str, recon: pd.DataFrame, loop_days: list[dt.date]) -> tuple[int, int]:
    """(rows compared, rows that differ): realised promoted plays in the
    reconciliation against the stored daily aggregates, per (track, market,
    surface, day); a row with promoted plays on one side only counts."""
    key = ["track_id", "market", "surface"]
    checked = mismatched = 0
    for day in loop_days:
        build = aggregates.stored_build(out, day)
        if not build:
            continue
        folder = storage.join(layout.aggregates_day(out, day), build, "tracks")
        files = storage.list_files(folder, ".parquet")
        columns = key + ["promoted_plays"]
        agg = pd.concat([pq.read_table(storage.open_input(f), columns=columns).to_pandas() for f in files],
                        ignore_index=True) if files else pd.DataFrame(columns=columns)
        agg = agg[agg["promoted_plays"] > 0]
        rec = recon[(recon["score_date"] == day) & (recon["realised_promoted_plays"] > 0)]
        j = agg.merge(rec[key + ["realised_promoted_plays"]], on=key, how="outer").fillna(0)
        checked += len(j)
        differ = j["promoted_plays"].astype(np.int64) != j["realised_promoted_plays"].astype(np.int64)
        mismatched += int(differ.sum())
    return checked, mismatched


def _gate(capacity: pd.DataFrame, loop_days: list[dt.date], step: dict, cfg: Config, settled: dt.date):
    c = capacity.copy()
    c["day"] = c["score_date"] - dt.timedelta(days=1)       # the reconciled day
    c = c[c["day"].isin(loop_days)]
    c["firing"] = c["delivery_miss_days"] >= cfg.gate_delivery_days
    gate = c[KEY + ["day", "delivery_ratio", "delivery_miss_days", "firing"]].sort_values(KEY + ["day"])
    stepped = (gate["market"] == step["market"]) & (gate["surface"] == step["surface"])
    after = gate[stepped & gate["firing"] & (gate["day"] >= step["day"])]
    first = after["day"].min() if len(after) else None
    off = gate[~stepped & gate["firing"]]
    elsewhere = [f"{r.market} {r.surface} {r.day}" for r in off[off["day"] >= settled].itertuples()]
    startup = [f"{r.market} {r.surface} {r.day}" for r in gate[gate["firing"] & (gate["day"] < settled)].itertuples()]
    return gate.reset_index(drop=True), first, elsewhere, startup


def render(f: Figures) -> str:
    """The table `oasis simulate` prints."""
    lines = [f"simulated days {f.loop_days[0]}..{f.loop_days[-1]} ({len(f.loop_days)}), calibration "
             f"{'on' if f.calibration else 'off'}; step x{f.step['factor']:g} of the gain in {f.step['market']} "
             f"{f.step['surface']} from {f.step['day']}",
             f"{'market':<6} {'surface':<9} {'planted g':>9} {'g-hat d' + str(f.gain_day):>9} {'error':>7} "
             f"{'response':>9} {'error':>7} {'E/O':>6}  {'planned':>10} {'realised':>10} "
             f"{'ratio d' + str(f.delivery_from) + '+':>10}  gate fired on"]
    fired = f.gate[f.gate["firing"]].groupby(KEY)["day"].apply(lambda s: ", ".join(d.strftime("%m-%d") for d in s))
    d = f.delivery.set_index(KEY)
    for r in f.gain.itertuples():
        k = (r.market, r.surface)
        dr = d.loc[k] if k in d.index else None
        lines.append(f"{r.market:<6} {r.surface:<9} {r.planted:>9.3f} {r.estimate:>9.3f} {r.error:>+7.1%} "
                     f"{r.serving_response:>9.3f} {r.response_error:>+7.1%} {r.forecast_over:>6.3f}  "
                     + (f"{dr.planned:>10,.0f} {dr.realised:>10,.0f} {dr.ratio:>10.3f}" if dr is not None
                        else f"{'':>10} {'':>10} {'':>10}")
                     + f"  {fired.get(k, '-')}")
    delay = f.gate_delay_days
    lines += [
        f"g-hat within {f.gain_tolerance:.0%} of g on day {f.gain_day}: {f.gain_within:.0%} of (market, surface) "
        f"(mean error {f.gain['error'].mean():+.1%}); serving_response (g-hat without the forecast's bias): "
        f"{f.response_within:.0%} (mean error {f.gain['response_error'].mean():+.1%}); E / O on the boosted rows "
        f"(E/O): mean {f.gain['forecast_over'].mean():.3f}",
        f"|realised / planned - 1| from day {f.delivery_from}: median over (market, surface) "
        f"{f.delivery_median:.2%}; over (market, surface, day) {f.delivery_daily_median:.2%}; smallest "
        f"(market, surface) planned {f.planned_per_day_min:,.0f} promoted plays a day",
        f"campaigns with a feasible floor and a flight ending inside: {len(f.floors)}, "
        f"{f.floors_met_share:.0%} got >= 95% of their floors in realised plays "
        f"(lowest {f.floors['share'].min() if len(f.floors) else float('nan'):.3f}); in the stepped "
        f"{f.step['market']} {f.step['surface']}: {len(f.floors_stepped)}, "
        f"{(f.floors_stepped['share'] >= 0.95).mean() if len(f.floors_stepped) else float('nan'):.0%}; "
        f"campaign-days outside the pacing clip: {f.pacing_violations}",
        f"reconciliation realised vs aggregates' promoted plays: {f.sums_mismatched} of {f.sums_checked} "
        f"(track, market, surface, day) differ",
        f"delivery gate: first fired in {f.step['market']} {f.step['surface']} "
        + (f"on {f.gate_first_after_step} ({delay} day(s) after the step)" if delay is not None else "never")
        + f"; elsewhere from day {f.delivery_from}: {', '.join(f.gate_elsewhere) or 'never'}; before day "
          f"{f.delivery_from} (calibration catching up with the planted gain): "
          f"{', '.join(f.gate_startup) or 'never'}",
    ]
    return "\n".join(lines)
