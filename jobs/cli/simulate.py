"""`oasis simulate`: a closed-loop world where each day's published plan drives
the next day's plays (`jobs.simulate`); prints what it measured against what
it planted (`jobs.simulate.figures`)."""
from __future__ import annotations

import argparse

from jobs import logs
from jobs.cli import args as a
from jobs.gates.checks import GATES
from jobs.sample.world import MARKETS
from jobs.simulate.figures import measure, render
from jobs.simulate.loop import SimulationRequest, simulate
from jobs.simulate.truth import TruthParams


def register(sub) -> None:
    defaults, truth = SimulationRequest(out="", days=1), TruthParams()
    p = sub.add_parser(
        "simulate", help="simulate a closed loop: each published plan drives the next day's plays",
        description="Build a sample world (as `oasis sample`) with a planted serving gain per market and "
                    "surface, a step change of it, and a lift per campaign; then, day by day, run the daily job "
                    "(as `oasis run`), read the snapshot it published and generate the next day's plays from "
                    "it. Resumable: rerun the same command after an interruption. Writes DIR/world (the inputs "
                    "and truth/), DIR/out (the snapshots and the warehouse) and prints the planted truth against "
                    "what the runs measured. Arguments not listed here are Apache Beam pipeline options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="local folder of the simulation")
    p.add_argument("--days", type=a.positive_int, required=True, help="simulated (closed-loop) days")
    p.add_argument("--seed", type=a.non_negative_int, default=defaults.seed,
                   help=f"random seed (default {defaults.seed})")
    p.add_argument("--warm-up-days", type=a.positive_int, default=defaults.warm_up_days,
                   help="days of logs before the first plan, when serving boosts every active enrolled track "
                        f"at a flat share (default {defaults.warm_up_days})")
    p.add_argument("--start", type=a.date_arg, default=defaults.start,
                   help=f"the first simulated day, YYYY-MM-DD (default {defaults.start}: mid-month, so the "
                        "warm-up boosts the month's campaigns)")
    p.add_argument("--markets", type=a.positive_int, default=defaults.markets,
                   help=f"markets, 1-{len(MARKETS)} (default {defaults.markets})")
    p.add_argument("--tracks", type=a.positive_int, default=defaults.tracks,
                   help=f"campaign tracks (default {defaults.tracks})")
    p.add_argument("--events-per-day", type=a.positive_int, default=defaults.events_per_day,
                   help=f"organic plays a day (default {defaults.events_per_day:,})")
    p.add_argument("--bad-row-share", type=a.non_negative_float, default=defaults.bad_row_share,
                   help=f"share of contract-breaking rows (default {defaults.bad_row_share})")
    p.add_argument("--calibration", choices=["on", "off"], default="on",
                   help="on: boost probabilities divide by the calibrated serving gain; off: by 1 (the config's "
                        "calibrate_serving_gain; default on)")
    p.add_argument("--step-day", type=a.positive_int, default=None,
                   help="simulated day of the planted step change of the gain, none if past --days (default: a third "
                        "in, at least 8)")
    p.add_argument("--step-factor", type=a.non_negative_float, default=truth.step_factor,
                   help=f"what the step multiplies the gain by (default {truth.step_factor})")
    p.add_argument("--saturation", type=a.non_negative_float, default=truth.saturation,
                   help=f"boost probability above which serving's response flattens (default {truth.saturation})")
    p.add_argument("--warm-up-share", type=a.non_negative_float, default=truth.warm_up_share,
                   help=f"promoted plays per organic play during the warm-up (default {truth.warm_up_share})")
    p.add_argument("--skip-gate", action="append", default=[], choices=list(GATES), metavar="NAME",
                   help="the daily runs publish even if this gate fails (repeatable; recorded as skipped), e.g. "
                        "score_drift across a month's change of flights")
    a.add_config(p)
    p.set_defaults(func=main, beam=True)


def main(args, beam_args: list[str]) -> int:
    truth = TruthParams(step_day=args.step_day, step_factor=args.step_factor, saturation=args.saturation,
                        warm_up_share=args.warm_up_share)
    req = SimulationRequest(
        out=args.out, days=args.days, seed=args.seed, warm_up_days=args.warm_up_days, start=args.start,
        markets=args.markets, tracks=args.tracks, events_per_day=args.events_per_day,
        bad_row_share=args.bad_row_share, calibration=args.calibration == "on", config_path=args.config,
        truth=truth, beam_args=tuple(beam_args), skip_gates=tuple(args.skip_gate))
    result = simulate(req, progress=logs.progress)
    print(f"simulation written to {result.sim_dir} in {result.seconds:.0f} s: inputs and truth in "
          f"{result.input_root}, snapshots and warehouse in {result.output_root}")
    print(render(measure(result.sim_dir)))
    return 0
