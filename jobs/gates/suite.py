"""Run every publish gate over a would-be snapshot, and say what failed."""
from __future__ import annotations

import pyarrow as pa

from jobs import layout
from jobs.gates import checks, delivery, drift
from jobs.manifest import GateResult, Manifest, blocking_gates
from pipelines.config import Config


def check_snapshot(tables: dict[str, pa.Table], cfg: Config | None = None, *,
                   previous: tuple[str, Manifest] | None = None,
                   expected_keys: pa.Table | None = None,
                   skip=(), for_date=None, metrics: dict[str, int] | None = None) -> list[GateResult]:
    """Every gate of `checks.GATES`, in that order, over the would-be snapshot's tables.

    previous: (folder, manifest) of the snapshot to compare with, or None.
    expected_keys: (track_id, market, surface) rows that must each appear once
        (`checks.expected_enrollment_keys`); None leaves enrolled_keys unchecked.
    for_date: the would-be snapshot's score date (the drift gates record how
        many days lie between it and the previous snapshot).
    skip: gate names an engineer has checked by hand; they are still measured
        and recorded, with skipped = true, but do not block the publish.
    metrics: the run's counters (the holdout gate reads them); None leaves it unchecked.
    """
    cfg = cfg or Config()
    skip = set(skip)
    results = (checks.table_gates(tables, cfg, expected_keys) + drift.drift_gates(tables, previous, cfg, for_date)
               + [delivery.delivery(tables["capacity"], cfg), checks.holdout(metrics)])
    assert [r.name for r in results] == list(checks.GATES), "every gate, once, in registry order"
    for r in results:
        r.skipped = r.name in skip
    return results


def failure_message(results: list[GateResult], where: str | None, problem: str | None = None,
                    retry_hint: str = "rerun with") -> str:
    """What a run that failed its gates tells the user: the failed gates with
    their measurements, where the would-be snapshot went, and how to publish
    anyway after checking by hand (`retry_hint` names the command in use; a
    hint with `{gates}` gets the gate names joined by commas, else repeated
    `--skip-gate NAME` flags are appended)."""
    names = blocking_gates(results)
    lines = [f"validation failed ({', '.join(names)}): nothing published"]
    for r in results:
        if r.name in names:
            lines.append(f"  {r.name}: {r.detail}")
    if where:
        lines.append(f"  the would-be snapshot is quarantined in {where} (see {layout.QUARANTINE_RECORD})")
    if problem:
        lines.append(f"  {problem}")
    if "{gates}" in retry_hint:
        lines.append(f"  after checking by hand, {retry_hint.format(gates=','.join(names))}")
    else:
        lines.append(f"  after checking by hand, {retry_hint} " + " ".join(f"--skip-gate {n}" for n in names))
    return "\n".join(lines)
