"""The closed loop of `oasis simulate`: a world in the input contract whose
plays answer the published plan, day by day.

    DIR/world    the input root: the sample world's catalogue and enrollments
                 (`jobs.sample`), engagement written one day at a time, and the
                 planted truth under truth/ (`jobs.simulate.truth`)
    DIR/out      the output root the daily runs publish to (snapshots,
                 aggregates, warehouse.duckdb)
    DIR/config.toml, DIR/simulation.json   the runs' config; the simulation's parameters

The warm-up days (no plan yet: serving boosts every active enrolled track at a
flat share) come first. Then, for each simulated day D: the daily job
(`jobs.run.daily.run`, the same code path as `oasis run`) runs on the logs up
to D-1 and publishes the snapshot for D; serving answers that snapshot's boost
probabilities (`jobs.simulate.serving`), which gives D's engagement. A last run
on D = the final day reconciles it. So N simulated days publish N+1
consecutive snapshots.

Resumable: a day is written into a staging folder and moved into place, its
engagement partition last, so a day is either whole or absent; a rerun with
the same arguments skips the days written and the snapshots published (a
daily run of the same inputs answers "already published") and continues.
Everything is seeded: the same arguments give the same files.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import layout
from jobs.run import daily
from jobs.run.options import RunOptions
from jobs.sample.world import (DICTIONARY_COLUMNS, MARKETS, MAX_ROWS_PER_FILE, ROW_GROUP_SIZE, build_enrollments,
                               build_world, export_for_day, truth_tables)
from jobs.simulate.serving import ServedDay, plan_boosts, serve_day, warm_up_boosts
from jobs.simulate.truth import Truth, TruthParams, plant
from jobs.snapshots import store
from pipelines.config import Config
from pipelines.errors import UsageError

PLAN_COLUMNS = ["track_id", "market", "surface", "campaign_id", "boost_probability"]
HORIZON_DAYS = 62   # campaigns are drawn for at least this many days from the start (two monthly flights)


class SimulationError(UsageError, ValueError):
    """Arguments that cannot make a simulation; the message names the argument."""


@dataclass(frozen=True)
class SimulationRequest:
    out: str
    days: int                           # simulated (closed-loop) days
    seed: int = 7
    warm_up_days: int = 14              # days before the loop, with no plan yet
    start: dt.date = dt.date(2026, 11, 15)  # the first simulated day (mid-month: see DEFAULT_START)
    markets: int = 6                    # the sample world's largest markets (see market_codes)
    tracks: int = 400
    events_per_day: int = 200_000
    bad_row_share: float = 0.002
    calibration: bool = True            # the runs' calibrate_serving_gain
    config_path: str | None = None      # further config for the daily runs
    truth: TruthParams = field(default_factory=TruthParams)
    beam_args: tuple[str, ...] = ()
    skip_gates: tuple[str, ...] = ()    # gates the daily runs record but do not block on (`--skip-gate`)

    def __post_init__(self):
        checks = [(self.days >= 1, "--days must be at least 1"),
                  (self.warm_up_days >= 1, "--warm-up-days must be at least 1 (the first run needs history)"),
                  (1 <= self.markets <= len(MARKETS), f"--markets must be between 1 and {len(MARKETS)}"),
                  (10 <= self.tracks <= 100_000, "--tracks must be between 10 and 100000"),
                  (1 <= self.events_per_day <= 100_000_000, "--events-per-day must be between 1 and 100000000"),
                  (0.0 <= self.bad_row_share < 0.5, "--bad-row-share must be in [0, 0.5)"),
                  (self.seed >= 0, "--seed must be >= 0"),
                  (0.0 < self.truth.gain_low <= self.truth.gain_high, "the planted gains need 0 < low <= high"),
                  (0.0 < self.truth.step_factor, "--step-factor must be above 0"),
                  (0.0 < self.truth.saturation <= 1.0, "--saturation must be in (0, 1]")]
        for ok, message in checks:
            if not ok:
                raise SimulationError(message)

    @property
    def loop_days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def warm_up(self) -> list[dt.date]:
        return [self.start - dt.timedelta(days=self.warm_up_days - i) for i in range(self.warm_up_days)]

    @property
    def market_codes(self) -> tuple[str, ...]:
        """The `markets` largest of the sample world's markets: the smallest of
        the first six plans about a tenth of what the largest six do."""
        largest = sorted(MARKETS, key=lambda m: -m[2])[:self.markets]
        return tuple(m[0] for m in MARKETS if m in largest)

    def identity(self, config: dict) -> dict:
        """What makes two simulations the same world (a resume must match it)."""
        return {"days": self.days, "seed": self.seed, "warm_up_days": self.warm_up_days,
                "start": self.start.isoformat(), "markets": self.markets, "tracks": self.tracks,
                "events_per_day": self.events_per_day, "bad_row_share": self.bad_row_share,
                "truth": self.truth.to_dict(), "config": config}


@dataclass
class DayRecord:
    day: dt.date
    phase: str                          # warm-up | loop | final
    events: int = 0
    promoted: int = 0
    snapshot_id: str = ""               # the snapshot whose plan drove the day (loop days)
    written: bool = False               # False: found whole from an earlier run
    seconds: float = 0.0


@dataclass
class SimulationResult:
    sim_dir: str
    input_root: str
    output_root: str
    truth: Truth
    loop_days: list[dt.date]
    days: list[DayRecord]
    seconds: float


def simulate(req: SimulationRequest, progress=print, *, on_day=None) -> SimulationResult:
    """Run (or resume) a simulation. `progress` gets one line per day;
    `on_day(record)` is called after each day is written (a test interrupts
    here)."""
    return Simulation(req, progress, on_day).run()


class Simulation:
    def __init__(self, req: SimulationRequest, progress, on_day=None):
        self.req, self.progress, self.on_day = req, progress, on_day
        self.world_root = layout.simulation_world(req.out)
        self.output_root = layout.simulation_output(req.out)
        self.config_path = layout.simulation_config(req.out)
        self.records: list[DayRecord] = []

    # --- phases ------------------------------------------------------------
    def run(self) -> SimulationResult:
        started = time.monotonic()
        self.prepare()
        for day in self.req.warm_up:
            self.warm_up_day(day)
        for i, day in enumerate(self.req.loop_days, 1):
            self.loop_day(i, day)
        last = self.req.loop_days[-1]
        t0 = time.monotonic()
        result = self.publish(last)
        self.progress(f"simulate: final run on the logs of {last}: {result.status} "
                      f"{result.manifest.snapshot_id} (score date {result.manifest.score_date}) "
                      f"[{time.monotonic() - t0:.1f} s]")
        return SimulationResult(self.req.out, self.world_root, self.output_root, self.truth, self.req.loop_days,
                                self.records, time.monotonic() - started)

    def prepare(self) -> None:
        req = self.req
        cfg = Config.from_mapping({**Config.load(req.config_path).to_dict(),
                                   "calibrate_serving_gain": int(req.calibration)})
        identity = req.identity(cfg.to_dict())
        os.makedirs(req.out, exist_ok=True)
        record = os.path.join(req.out, layout.SIMULATION_RECORD)
        if os.path.exists(record):
            with open(record) as f:
                before = json.load(f)
            if before.get("identity") != identity:
                changed = sorted(k for k in identity if before.get("identity", {}).get(k) != identity[k])
                raise SimulationError(f"{req.out} holds a simulation with other arguments ({', '.join(changed)}); "
                                      f"rerun with the same arguments to resume it, or use another --out")
        self.cfg = cfg
        _write_text(self.config_path, "".join(f"{k} = {v!r}\n" for k, v in cfg.to_dict().items()))
        w_end = req.loop_days[-1]
        # the catalogue is anchored on the first simulated day and the campaigns drawn up to a fixed horizon,
        # not on the last day: simulations of the same arguments but fewer days are the same world
        self.world = build_world(seed=req.seed, tracks=req.tracks, events_per_day=req.events_per_day,
                                 markets=req.markets, end_date=req.start, first_day=req.warm_up[0],
                                 codes=req.market_codes)
        self.enrollments = build_enrollments(self.world, req.warm_up[0],
                                             max(w_end, req.start + dt.timedelta(days=HORIZON_DAYS - 1)))
        self.truth = plant(self.world, self.enrollments, req.truth, req.seed, req.loop_days)
        os.makedirs(layout.truth_file(self.world_root, ""), exist_ok=True)
        for name, table in truth_tables(self.world).items():
            _write(table, layout.truth_file(self.world_root, f"{name}.parquet"))
        _write(self.truth.gain_table(req.loop_days), layout.truth_file(self.world_root, "serving_gain.parquet"))
        _write(self.truth.campaign_table(), layout.truth_file(self.world_root, "campaigns.parquet"))
        doc = {"identity": identity, "truth": self.truth.record(), "markets": list(self.world.codes),
               "first_day": req.warm_up[0].isoformat(), "loop_start": req.start.isoformat(),
               "last_day": w_end.isoformat()}
        _write_text(layout.truth_file(self.world_root, "simulation.json"), json.dumps(doc, indent=2, sort_keys=True))
        _write_text(record, json.dumps(doc, indent=2, sort_keys=True))
        market, surface = self.truth.step_pair()
        self.progress(f"simulate: {req.days} day(s) from {req.start} after {req.warm_up_days} warm-up day(s); "
                      f"{len(self.world.codes)} markets x 3 surfaces, planted gain "
                      f"{self.truth.gain.min():.2f}..{self.truth.gain.max():.2f}, step x{self.truth.step_factor:g} "
                      f"in {market} {surface} from {self.truth.step_day}; calibration "
                      f"{'on' if req.calibration else 'off'}; world in {self.world_root}, "
                      f"output in {self.output_root}")

    def warm_up_day(self, day: dt.date) -> None:
        t0 = time.monotonic()
        rec = DayRecord(day, "warm-up")
        if not self.written(day):
            served = self.serve(day, warm_up_boosts(self.world, self.enrollments, self.truth, day))
            self.write_day(day, served)
            rec.events, rec.promoted, rec.written = served.stats["events"], served.stats["promoted"], True
        self.finish(rec, t0, f"warm-up {day}")

    def loop_day(self, i: int, day: dt.date) -> None:
        t0 = time.monotonic()
        result = self.publish(day - dt.timedelta(days=1))
        run_s = time.monotonic() - t0
        rec = DayRecord(day, "loop", snapshot_id=result.manifest.snapshot_id)
        if not self.written(day):
            served = self.serve(day, plan_boosts(self.world, self.enrollments, self.truth,
                                                 self.plan(result), day))
            self.write_day(day, served)
            rec.events, rec.promoted, rec.written = served.stats["events"], served.stats["promoted"], True
        self.finish(rec, t0, f"day {i}/{self.req.days} {day}: run {result.status} {result.manifest.snapshot_id} "
                             f"[{run_s:.1f} s];")

    def finish(self, rec: DayRecord, t0: float, what: str) -> None:
        rec.seconds = time.monotonic() - t0
        self.records.append(rec)
        body = (f"{rec.events:,} events, {rec.promoted:,} promoted" if rec.written
                else "already written")
        self.progress(f"simulate: {what} {body} [{rec.seconds:.1f} s]")
        if self.on_day is not None:
            self.on_day(rec)

    # --- pieces ------------------------------------------------------------
    def publish(self, logs_day: dt.date) -> daily.RunResult:
        """The daily run on the logs up to `logs_day` (publishes, or finds the
        snapshot the same inputs already published)."""
        req = daily.RunRequest(as_of=logs_day, input_root=self.world_root, output_root=self.output_root,
                               config_path=self.config_path, beam_args=list(self.req.beam_args),
                               options=RunOptions(skip_gates=self.req.skip_gates),
                               retry_hint="rerun `oasis simulate` with")
        return daily.run(req, progress=lambda message: None)

    def plan(self, result: daily.RunResult) -> pa.Table:
        files = [layout.listed_file(result.snapshot_dir, f.path)
                 for f in result.manifest.table_files("promotion_scores")]
        return store.read_table_files(files, "promotion_scores", PLAN_COLUMNS)

    def serve(self, day: dt.date, boosts) -> ServedDay:
        return serve_day(self.world, self.enrollments, self.truth, boosts, day,
                         events_per_day=self.req.events_per_day, bad_row_share=self.req.bad_row_share,
                         slack_hours=self.cfg.event_ts_slack_hours)

    def written(self, day: dt.date) -> bool:
        folder = layout.input_partition(self.world_root, "engagement", day)
        return os.path.isdir(folder) and any(f.endswith(".parquet") for f in os.listdir(folder))

    def write_day(self, day: dt.date, served: ServedDay) -> None:
        """Staging first, then moved into place: enrollments, truth, engagement last."""
        stage = layout.staging_day_dir(self.world_root, day)
        shutil.rmtree(stage, ignore_errors=True)
        parts = {"enrollments": os.path.join(stage, "enrollments"), "truth": os.path.join(stage, "truth"),
                 "engagement": os.path.join(stage, "engagement")}
        for folder in parts.values():
            os.makedirs(folder)
        _write(export_for_day(self.enrollments, day), os.path.join(parts["enrollments"], "part-00000.parquet"))
        _write(served.cells, os.path.join(parts["truth"], "cells.parquet"))
        events = served.events
        n_files = max(1, math.ceil(events.num_rows / MAX_ROWS_PER_FILE))
        bounds = np.linspace(0, events.num_rows, n_files + 1).round().astype(int)
        for j in range(n_files):
            _write(events.slice(bounds[j], bounds[j + 1] - bounds[j]),
                   os.path.join(parts["engagement"], f"part-{j:05d}.parquet"), DICTIONARY_COLUMNS)
        targets = {"enrollments": layout.input_partition(self.world_root, "enrollments", day),
                   "truth": layout.truth_day_dir(self.world_root, day),
                   "engagement": layout.input_partition(self.world_root, "engagement", day)}
        for name in ("enrollments", "truth", "engagement"):
            shutil.rmtree(targets[name], ignore_errors=True)
            os.makedirs(os.path.dirname(targets[name]), exist_ok=True)
            os.replace(parts[name], targets[name])
        shutil.rmtree(stage, ignore_errors=True)


def _write(table: pa.Table, path: str, dictionary: list[str] | bool = True) -> None:
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=1,
                   use_dictionary=dictionary, write_statistics=True)
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
