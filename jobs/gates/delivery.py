"""The delivery gate: did serving deliver what the plan asked for?

Each run reconciles the plan of its logs day with that day's promoted plays
(`pipelines.scoring.delivery`) and publishes, per (market, surface) in
`capacity`, the day's ratio of realised to planned promoted plays and how many
consecutive days, up to the logs day, it missed by more than
`gate_delivery_max_miss` (`delivery_miss_days`; a day with fewer than
`gate_delivery_min_planned` planned plays is not judged and ends a streak).
The gate fails when some (market, surface) has missed `gate_delivery_days` days
in a row: serving changed, or the serving gain's calibration cannot follow.

By default it only warns (`gate_delivery_blocks = 0`): the snapshot is
published and the summary, the report and the manifest say which (market,
surface) drifted. With `gate_delivery_blocks = 1` it fails the run like the
other gates, and `--skip-gate delivery` overrides it.
"""
from __future__ import annotations

import pyarrow as pa

from jobs.gates.checks import result
from jobs.manifest import GateResult
from pipelines.config import Config

COLUMNS = ["market", "surface", "reconciled_planned", "reconciled_realised", "delivery_ratio", "delivery_miss_days"]
MAX_NAMED = 5  # (market, surface) named in the detail


def delivery(capacity: pa.Table, cfg: Config) -> GateResult:
    days, bound = cfg.gate_delivery_days, cfg.gate_delivery_max_miss
    threshold = {"max_miss": bound, "days": days, "min_planned": cfg.gate_delivery_min_planned}
    c = capacity.select(COLUMNS).to_pandas().sort_values(["market", "surface"])
    judged = c[c["delivery_ratio"].notna() & (c["reconciled_planned"] >= cfg.gate_delivery_min_planned)]
    over = c[c["delivery_miss_days"] >= days]
    if len(over):
        named = "; ".join(f"{r.market} {r.surface}: realised {r.reconciled_realised:,} of "
                          f"{r.reconciled_planned:,.0f} planned (ratio {r.delivery_ratio:.2f}), "
                          f"{r.delivery_miss_days} days in a row"
                          for r in over.head(MAX_NAMED).itertuples())
        more = f"; and {len(over) - MAX_NAMED} more" if len(over) > MAX_NAMED else ""
        detail = (f"{len(over)} (market, surface) delivered more than {bound:.0%} off the plan for {days}+ "
                  f"consecutive days: {named}{more}")
    elif len(judged):
        worst = float((judged["delivery_ratio"] - 1.0).abs().max())
        detail = (f"{len(judged)} (market, surface) judged on the logs day, largest |realised / planned - 1| "
                  f"{worst:.1%}; none missed by more than {bound:.0%} for {days} consecutive days")
    else:
        detail = (f"no (market, surface) judged: no plan was published for the logs day, or none planned "
                  f"{cfg.gate_delivery_min_planned:,.0f}+ promoted plays")
    r = result("delivery", over.empty, detail, len(over), threshold)
    r.warn_only = not cfg.gate_delivery_blocks
    return r
