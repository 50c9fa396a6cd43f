"""`make bench`: the daily job against DuckDB's daily core on the same files,
the allocation alone, and the lift stage alone on the largest day, side by side
from one run.

Each measured command runs in its own process (os.wait4 gives its CPU time
and peak memory); OASIS and DuckDB runs are interleaved and medians reported
(`--repeat`, default 3), because this machine's speed drifts. Worlds are generated once under bench/data/ (git-ignored)
and reused. Results are printed and written to bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
RESULTS = os.path.join(HERE, "results")
END = dt.date(2026, 11, 24)
SIZES = (1_000_000, 3_000_000, 6_000_000)


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Wall time, CPU time and peak RSS of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
            "stdout": out.decode()}


def world(events: int) -> str:
    path = os.path.join(DATA, f"w{events // 1_000_000}m")
    # a world generated before the sample had an exposure log is generated again
    if not os.path.exists(os.path.join(path, "LAST_DAY")) or not os.path.isdir(os.path.join(path, "exposures")):
        print(f"generating a world with {events:,} events per day under {path}", flush=True)
        subprocess.run([sys.executable, "-m", "jobs.cli", "sample", "--out", path, "--days", "2",
                        "--tracks", "5000", "--markets", "20", "--events-per-day", str(events), "--seed", "1",
                        "--end-date", END.isoformat(), "--holdout"], check=True)
    return path


def oasis(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def bench_daily(events: int, repeat: int) -> dict:
    """The steady-state run and the DuckDB core, interleaved `repeat` times.

    This machine's speed drifts (the same run's CPU time moved between 11 and
    16 s within minutes), so each OASIS run is paired with a DuckDB run right
    after it: the ratio is the median of the pairs' ratios, and each side's
    figures are its medians (peak memory: the largest)."""
    w = world(events)
    out = os.path.join(DATA, f"out{events // 1_000_000}m")
    prev = (END - dt.timedelta(days=1)).isoformat()
    # the day before is already published: only one raw day is aggregated
    subprocess.run(oasis(["run", "--date", prev, "--input", w, "--output", out]), check=True,
                   stdout=subprocess.DEVNULL)
    base_out = os.path.join(DATA, f"duckdb{events // 1_000_000}m.parquet")
    pairs = []
    for _ in range(repeat):
        run = measure(oasis(["run", "--date", END.isoformat(), "--input", w, "--output", out, "--force"]))
        base = measure([sys.executable, os.path.join(HERE, "duckdb_core.py"), w, END.isoformat(), base_out])
        pairs.append((run, base))
    row = {"events": events, "repeat": repeat}
    for i, name in enumerate(("oasis", "duckdb")):
        ms = [p[i] for p in pairs]
        row[name] = {
            "wall_s": round(statistics.median(m["wall_s"] for m in ms), 3),
            "cpu_s": round(statistics.median(m["cpu_s"] for m in ms), 3),
            "peak_mb": round(max(m["peak_mb"] for m in ms), 1),
            "wall_s_runs": [round(m["wall_s"], 2) for m in ms],
        }
        row[name]["events_per_s"] = round(events / row[name]["wall_s"])
        row[name]["cpu_us_per_event"] = round(row[name]["cpu_s"] / events * 1e6, 3)
    row["ratio_wall_runs"] = [round(r["wall_s"] / b["wall_s"], 2) for r, b in pairs]
    row["ratio_wall"] = round(statistics.median(row["ratio_wall_runs"]), 2)
    return row


def bench_lift(events: int, repeat: int) -> dict:
    """The lift stage alone on the day of the `events` world (bench/lift.py):
    read + contract check, with and without the lift stage on top, interleaved
    `repeat` times; the lift's cost is the median difference, per event of the
    day and per exposure."""
    w = world(events)
    scratch = os.path.join(DATA, "lift-scratch")
    runs = {"read": [], "lift": []}
    for _ in range(repeat):
        for mode in ("read", "lift"):
            m = measure([sys.executable, "-m", "bench.lift", w, END.isoformat(), scratch, "--mode", mode])
            m["counts"] = json.loads(m.pop("stdout").strip().splitlines()[-1])
            runs[mode].append(m)
    counts = runs["lift"][0]["counts"]
    row = {"events": counts["events"], "exposures": counts["exposures"], "repeat": repeat, **{
        k: counts[k] for k in ("listener_fact_rows", "exposure_fact_rows", "lift_rows")}}
    for key in ("cpu_s", "wall_s"):
        diffs = [b[key] - a[key] for a, b in zip(runs["read"], runs["lift"])]
        row[f"lift_{key}"] = round(statistics.median(diffs), 3)
        row[f"lift_{key}_runs"] = [round(d, 2) for d in diffs]
        row[f"read_{key}"] = round(statistics.median(m[key] for m in runs["read"]), 3)
    row["peak_mb_read"] = round(max(m["peak_mb"] for m in runs["read"]), 1)
    row["peak_mb_lift"] = round(max(m["peak_mb"] for m in runs["lift"]), 1)
    row["cpu_us_per_event"] = round(row["lift_cpu_s"] / max(row["events"], 1) * 1e6, 3)
    row["cpu_us_per_exposure"] = round(row["lift_cpu_s"] / max(row["exposures"], 1) * 1e6, 3)
    return row


def print_lift(rows):
    print("\nThe lift stage alone (BuildLiftFacts + MeasureCampaignLift over read + check of the same day)")
    print(f"{'events':>10} {'exposures':>10} | {'lift cpu s':>10} {'wall s':>7} | {'us/event':>8} "
          f"{'us/exposure':>11} | {'peak MB read/lift':>17} | fact rows (listeners, exposures)")
    for r in rows:
        print(f"{r['events']:>10,} {r['exposures']:>10,} | {r['lift_cpu_s']:>10.2f} {r['lift_wall_s']:>7.2f} | "
              f"{r['cpu_us_per_event']:>8.3f} {r['cpu_us_per_exposure']:>11.2f} | "
              f"{r['peak_mb_read']:>7.0f} / {r['peak_mb_lift']:<7.0f} | {r['listener_fact_rows']:,}, "
              f"{r['exposure_fact_rows']:,}  (runs: {', '.join(map(str, r['lift_cpu_s_runs']))} s CPU)")


def machine() -> dict:
    import numpy

    return {"cpus": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "numpy": numpy.__version__, "load_avg_at_start": os.getloadavg()}


def print_daily(rows):
    print("\nSteady-state daily run (day before published; one raw day aggregated) vs DuckDB daily core")
    print(f"{'events':>10} | {'oasis wall s':>12} {'ev/s':>10} {'cpu us/ev':>9} {'peak MB':>8} | "
          f"{'duckdb wall s':>13} {'ev/s':>10} {'cpu us/ev':>9} {'peak MB':>8} | {'ratio':>5}")
    for r in rows:
        o, d = r["oasis"], r["duckdb"]
        print(f"{r['events']:>10,} | {o['wall_s']:>12.2f} {o['events_per_s']:>10,} {o['cpu_us_per_event']:>9.2f} "
              f"{o['peak_mb']:>8.0f} | {d['wall_s']:>13.2f} {d['events_per_s']:>10,} {d['cpu_us_per_event']:>9.2f} "
              f"{d['peak_mb']:>8.0f} | {r['ratio_wall']:>5.2f}  (runs: {', '.join(map(str, r.get('ratio_wall_runs', [])))})")


def marginal(rows) -> list[dict]:
    """CPU per extra event between the smallest day and each larger one: the
    per-event cost without the fixed cost of a run, to check it stays flat."""
    out = []
    base = rows[0]
    for r in rows[1:]:
        extra = r["events"] - base["events"]
        out.append({"from": base["events"], "to": r["events"], **{
            name: round((r[name]["cpu_s"] - base[name]["cpu_s"]) / extra * 1e6, 3) for name in ("oasis", "duckdb")}})
    return out


def print_marginal(rows):
    print("\nMarginal CPU per extra event (fixed costs cancel out)")
    print(f"{'events':>22} | {'oasis cpu us/ev':>15} | {'duckdb cpu us/ev':>16}")
    for m in rows:
        print(f"{m['from']:>10,} -> {m['to']:>9,} | {m['oasis']:>15.2f} | {m['duckdb']:>16.2f}")


def print_allocation(rows):
    print("\nAllocation alone, 100 (market, surface) problems")
    print(f"{'rows':>10} {'method':>8} {'seconds':>8} {'peak MB':>8} {'gap to exact':>13} {'feasible':>8}")
    for r in rows:
        gap = r.get("gap")
        print(f"{r['rows']:>10,} {r['method']:>8} {r['seconds']:>8.2f} {r.get('peak_mb', float('nan')):>8.0f} "
              f"{(f'{gap:.4%}' if gap is not None else 'n/a'):>13} {str(r.get('feasible')):>8}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="events per day, comma-separated")
    ap.add_argument("--skip-allocation", action="store_true")
    ap.add_argument("--skip-lift", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per size (medians are reported)")
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    result = {"machine": machine(), "started": dt.datetime.now(dt.timezone.utc).isoformat(), "daily": [],
              "allocation": [], "lift": []}
    sizes = [int(s) for s in args.sizes.split(",")]
    for events in sizes:
        print(f"measuring the daily run on {events:,} events ...", flush=True)
        result["daily"].append(bench_daily(events, args.repeat))
        print_daily(result["daily"][-1:])
    if not args.skip_lift:
        print(f"measuring the lift stage on the {max(sizes):,}-event day ...", flush=True)
        result["lift"].append(bench_lift(max(sizes), args.repeat))
        print_lift(result["lift"])
    if not args.skip_allocation:
        from bench import allocation

        print("measuring the allocation ...", flush=True)
        result["allocation"] = allocation.run()
    print_daily(result["daily"])
    if len(result["daily"]) > 1:
        result["marginal"] = marginal(result["daily"])
        print_marginal(result["marginal"])
    if result["allocation"]:
        print_allocation(result["allocation"])
    if result["lift"]:
        print_lift(result["lift"])
    path = os.path.join(RESULTS, "latest.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
