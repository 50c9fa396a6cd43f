"""`make bench`: the daily job against DuckDB's daily core on the same files,
and the allocation alone, side by side from one run.

Each measured command runs in its own process (os.wait4 gives its CPU time
and peak memory). Worlds are generated once under bench/data/ (git-ignored)
and reused. Results are printed and written to bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
    if not os.path.exists(os.path.join(path, "LAST_DAY")):
        print(f"generating a world with {events:,} events per day under {path}", flush=True)
        subprocess.run([sys.executable, "-m", "jobs.cli", "sample", "--out", path, "--days", "2",
                        "--tracks", "5000", "--markets", "20", "--events-per-day", str(events), "--seed", "1",
                        "--end-date", END.isoformat()], check=True)
    return path


def oasis(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def bench_daily(events: int) -> dict:
    w = world(events)
    out = os.path.join(DATA, f"out{events // 1_000_000}m")
    prev = (END - dt.timedelta(days=1)).isoformat()
    # the day before is already published: only one raw day is aggregated
    subprocess.run(oasis(["run", "--date", prev, "--input", w, "--output", out]), check=True,
                   stdout=subprocess.DEVNULL)
    run = measure(oasis(["run", "--date", END.isoformat(), "--input", w, "--output", out, "--force"]))
    base_out = os.path.join(DATA, f"duckdb{events // 1_000_000}m.parquet")
    base = measure([sys.executable, os.path.join(HERE, "duckdb_core.py"), w, END.isoformat(), base_out])
    row = {"events": events}
    for name, m in (("oasis", run), ("duckdb", base)):
        row[name] = {k: round(v, 3) for k, v in m.items() if k != "stdout"}
        row[name]["events_per_s"] = round(events / m["wall_s"])
        row[name]["cpu_us_per_event"] = round(m["cpu_s"] / events * 1e6, 3)
    row["ratio_wall"] = round(run["wall_s"] / base["wall_s"], 2)
    return row


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
              f"{d['peak_mb']:>8.0f} | {r['ratio_wall']:>5.2f}")


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
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    result = {"machine": machine(), "started": dt.datetime.now(dt.timezone.utc).isoformat(), "daily": [],
              "allocation": []}
    for events in (int(s) for s in args.sizes.split(",")):
        print(f"measuring the daily run on {events:,} events ...", flush=True)
        result["daily"].append(bench_daily(events))
        print_daily(result["daily"][-1:])
    if not args.skip_allocation:
        from bench import allocation

        print("measuring the allocation ...", flush=True)
        result["allocation"] = allocation.run()
    print_daily(result["daily"])
    if result["allocation"]:
        print_allocation(result["allocation"])
    path = os.path.join(RESULTS, "latest.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
