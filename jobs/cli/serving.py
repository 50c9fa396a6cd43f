"""`oasis serving sync --output OUT [--repo DIR]`: the snapshot LATEST points to,
into the Feast online store (the work is in `jobs.feature_store.sync`)."""
from __future__ import annotations

from jobs import layout, logs
from jobs.cli import args as a
from jobs.feature_store import sync


def register(sub) -> None:
    p = sub.add_parser("serving", help="hand the latest snapshot to serving: the Feast online store",
                       description="The online store serving reads at request time (needs the `serving` extra: "
                                   "pip install -e '.[serving]').")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "sync", help="materialise the snapshot LATEST points to into the online store (idempotent)",
        description="Verify the snapshot LATEST points to (falling back to the previous valid one if it is "
                    "damaged), refuse it when it is stale, leave out rows past their campaign's flight end, and "
                    "make the repository's online store serve exactly it: one whole snapshot, switched "
                    "atomically. With nothing new it writes nothing.")
    a.add_output(q, "output root whose LATEST snapshot is served")
    q.add_argument("--repo", default=None, metavar="DIR",
                   help=f"the feature repository, a local folder (default: OUT/{layout.FEATURE_REPO})")
    a.add_serving_freshness(q)
    q.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    repo = args.repo or layout.feature_repo(args.output)
    result = sync.observed_sync(args.output, repo, today=args.today, max_age_days=args.max_age_days,
                       allow_stale=args.allow_stale, progress=logs.progress)
    print(render(result))
    return 0


def render(r: sync.SyncResult) -> str:
    what = {"unchanged": "already serving it; nothing written",
            "repointed": "re-pointed to a store that already held it",
            "built": "built a new store and switched to it"}[r.action]
    lines = [f"online store {r.repo}: snapshot {r.snapshot_id} (score date {r.score_date}): {what} "
             f"({r.seconds:.1f} s)",
             f"  store     {r.store}",
             "  rows      " + ", ".join(f"{view} {n:,}" for view, n in r.rows.items())
             + f"; {r.withheld_rows:,} promotion_scores rows withheld (their flight has ended)"]
    for sid, reason in r.fell_back_from:
        lines.append(f"  warning   LATEST's {sid} is not usable ({reason}); serving the previous valid snapshot")
    if r.removed:
        lines.append(f"  removed   {', '.join(r.removed)}")
    return "\n".join(lines)
