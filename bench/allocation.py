"""The allocation alone: the methods of `pipelines.allocation.solve` on `problems`
independent (market, surface) problems that share `rows` candidate rows.

Each problem is a seeded binding instance (every constraint family binds at the
optimum; `random_problem(..., check=False)`, so that drawing 100k-track
problems does not need the exact solver) with A = n/10 artists, L = n/50
licensors (5..50) and C = n/50 campaigns (3..200). The instances depend only on
(seed, rows, problems, index), so every method sees the same problems.

Each (size, method) runs in child processes of its own (`workers` of them, each
given every workers-th problem, as the pipeline spreads (market, surface)
problems over cores):

* seconds: the solve time of the slowest child (problem generation excluded);
  with workers=1 the sum over the problems.
* peak_mb: the largest rise of the child's resident memory over one solve
  (Linux: /proc/self/clear_refs + VmHWM, so HiGHS's C++ memory counts; else the
  child's peak RSS).
* gap: the worst (optimum − objective) / |optimum| over the problems with an
  exact optimum; exact is only run while its solves fit in `exact_budget_s`
  (`exact_coverage` says for what share of the problems).
* feasible: `check_feasible` is empty for every problem.

`python -m bench.allocation [--sizes 10000,100000,1000000] [--problems 100]
[--methods exact,dual,dual-raw,auto] [--workers 1]` prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SIZES = (10_000, 100_000, 1_000_000)
METHODS = ("exact", "dual", "dual-raw", "auto")


# ----------------------------------------------------------------------------- child side

def _shape(n: int) -> tuple[int, int, int, int]:
    return n, max(5, n // 10), max(5, min(50, n // 50)), max(3, min(200, n // 50))


def _problem(seed: int, rows: int, problems: int, index: int):
    import numpy as np

    from pipelines.allocation.instances import random_problem

    n = max(100, rows // problems)
    rng = np.random.default_rng([seed, rows, problems, index])
    return random_problem(rng, *_shape(n), binding=True, check=False)


def _solver(method: str):
    from pipelines.allocation.dual import solve_dual
    from pipelines.allocation.solve import solve

    if method == "dual-raw":                     # the dual ascent + repair, never polished
        return lambda p: solve_dual(p, polish=False)
    return lambda p: solve(p, method=method)


class _Memory:
    """Peak resident memory of one solve, in MB."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.proc = "VmHWM" in self._status()
        except OSError:
            self.proc = False

    @staticmethod
    def _status() -> dict:
        with open("/proc/self/status") as f:
            text = f.read()
        return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}

    def start(self) -> None:
        if self.proc:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")                       # reset VmHWM to the current RSS
            self.base = self._status()["VmRSS"]

    def peak_mb(self) -> float:
        if self.proc:
            return max(0, self._status()["VmHWM"] - self.base) / 1024.0
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(spec: dict) -> dict:
    """Solve problems spec['indices'] with spec['method'], stop once the solves took
    spec['budget_s'] (if set); report per-problem objectives and feasibility."""
    from pipelines.allocation.problem import check_feasible

    solve = _solver(spec["method"])
    mem = _Memory()
    seconds, peak, out = 0.0, 0.0, []
    for i in spec["indices"]:
        if spec.get("budget_s") is not None and seconds >= spec["budget_s"]:
            break
        p = _problem(spec["seed"], spec["rows"], spec["problems"], i)
        mem.start()
        t = time.perf_counter()
        sol = solve(p)
        dt = time.perf_counter() - t
        peak = max(peak, mem.peak_mb())
        seconds += dt
        info = sol.info or {}
        out.append({"index": i, "objective": sol.objective, "seconds": dt, "n": p.n,
                    "feasible": check_feasible(p, sol.x, sol.shortfall) == [], "method": sol.method,
                    "polished": info.get("polished"), "passes": info.get("passes"),
                    "certified_gap": info.get("certified_gap")})
    return {"seconds": seconds, "peak_mb": peak, "results": out}


# ----------------------------------------------------------------------------- parent side

def _spawn(specs: list[dict], timeout: float | None) -> list[dict | None]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = [subprocess.Popen([sys.executable, "-m", "bench.allocation", "--child", json.dumps(s)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in specs]
    out = []
    deadline = None if timeout is None else time.monotonic() + timeout
    for proc in procs:
        try:
            left = None if deadline is None else max(1.0, deadline - time.monotonic())
            stdout, stderr = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out.append(None)
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"allocation bench child failed:\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _measure(method: str, rows: int, problems: int, seed: int, workers: int,
             budget_s: float | None) -> dict:
    specs = [{"method": method, "rows": rows, "problems": problems, "seed": seed,
              "indices": list(range(w, problems, workers)),
              "budget_s": None if budget_s is None else budget_s / workers}
             for w in range(workers)]
    # A child that has not finished a single solve long after the budget is stopped.
    timeout = None if budget_s is None else 3.0 * budget_s + 60.0
    parts = _spawn(specs, timeout)
    results = sorted((r for part in parts if part for r in part["results"]), key=lambda r: r["index"])
    done = len(results)
    row = {
        "rows": rows, "problems": problems, "tracks_per_problem": max(100, rows // problems),
        "method": method, "workers": workers, "solved": done,
        "seconds": max((part["seconds"] for part in parts if part), default=float("nan")),
        "peak_mb": max((part["peak_mb"] for part in parts if part), default=float("nan")),
        "feasible": all(r["feasible"] for r in results) if done else None,   # of the problems solved
        "infeasible": sum(not r["feasible"] for r in results),
        "complete": done == problems,
        "results": results,
    }
    if done and done < problems:                  # extrapolated to all problems
        row["seconds_estimated"] = row["seconds"] * problems / done
    picked = sorted({r["method"] for r in results})
    row["picked"] = ",".join(picked)
    passes = [r["passes"] for r in results if r["passes"] is not None]
    if passes:
        row["passes_mean"] = sum(passes) / len(passes)
        row["polished_share"] = sum(bool(r["polished"]) for r in results) / done
        certs = [r["certified_gap"] for r in results if r["certified_gap"] is not None]
        row["certified_gap_max"] = max(certs) if certs else None
    return row


def run(sizes=SIZES, problems: int = 100, methods=METHODS, seed: int = 0, workers: int = 1,
        exact_budget_s: float = 60.0) -> list[dict]:
    """One dict per (size, method): rows, problems, method, seconds, peak_mb, gap (worst,
    relative to |optimum|, None where no optimum was computed), gap_mean, feasible, ...
    Exact solves stop once they took exact_budget_s; gaps are over the problems solved."""
    out = []
    for rows in sizes:
        # exact first (also when not asked for, to have the optima), within its budget
        order = (["exact"] if "exact" in methods or exact_budget_s > 0 else []) + \
            [m for m in methods if m != "exact"]
        measured = {m: _measure(m, rows, problems, seed, workers, exact_budget_s if m == "exact" else None)
                    for m in order}
        optimum = {r["index"]: r["objective"] for r in measured["exact"]["results"]} if "exact" in measured else {}
        for method in order:
            row = measured[method]
            gaps = [max(0.0, optimum[r["index"]] - r["objective"]) / max(abs(optimum[r["index"]]), 1e-9)
                    for r in row["results"] if r["index"] in optimum]
            row["gap"] = max(gaps) if gaps else None
            row["gap_mean"] = sum(gaps) / len(gaps) if gaps else None
            row["exact_coverage"] = len(gaps) / problems
            del row["results"]
            if method in methods:
                out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    print(f"{'rows':>10} {'per prob':>8} {'method':>8} {'picked':>10} {'seconds':>9} {'peak MB':>8} "
          f"{'gap max':>10} {'gap mean':>10} {'exact cov':>9} {'feasible':>8} {'passes':>7}")
    for r in rows:
        secs = f"{r['seconds']:.2f}" if r["complete"] else f"~{r.get('seconds_estimated', float('nan')):.0f}"
        gap = "n/a" if r["gap"] is None else f"{r['gap']:.2e}"
        gmean = "n/a" if r["gap_mean"] is None else f"{r['gap_mean']:.2e}"
        passes = f"{r['passes_mean']:.0f}" if r.get("passes_mean") is not None else ""
        print(f"{r['rows']:>10,} {r['tracks_per_problem']:>8,} {r['method']:>8} {r['picked']:>10} {secs:>9} "
              f"{r['peak_mb']:>8.1f} {gap:>10} {gmean:>10} {r['exact_coverage']:>9.0%} "
              f"{str(r['feasible']):>8} {passes:>7}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="total candidate rows, comma-separated")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact-budget", type=float, default=60.0, help="seconds of exact solves per size")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    rows = run(sizes=[int(s) for s in args.sizes.split(",")], problems=args.problems,
               methods=args.methods.split(","), seed=args.seed, workers=args.workers,
               exact_budget_s=args.exact_budget)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
