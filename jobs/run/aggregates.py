"""The daily aggregates a run builds and later runs reuse.

A day's aggregates are complete when `OUT/aggregates/dt=D/_SUCCESS` names a
build folder (`build=<snapshot_id>`); `_SUCCESS.json`, written first, records
the raw files that build was made from (engagement, and the exposure log when
the day had one) and how its lift facts are sharded, so a run that reuses the
build has the same run fingerprint as the run that built it.
"""
from __future__ import annotations

import datetime as dt
import json

from jobs import layout
from pipelines import storage


def stored_build(output_root: str, day: dt.date) -> str | None:
    """The name of the complete aggregate build of `day`, if any."""
    marker = storage.join(layout.aggregates_day(output_root, day), layout.AGGREGATE_MARKER)
    try:
        return storage.read_bytes(marker).decode("utf-8", "replace").strip() or None
    except FileNotFoundError:
        return None


def _detail(output_root: str, day: dt.date) -> dict:
    uri = storage.join(layout.aggregates_day(output_root, day), layout.AGGREGATE_MARKER_DETAIL)
    try:
        detail = json.loads(storage.read_bytes(uri))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return detail if isinstance(detail, dict) else {}


def built_from(output_root: str, day: dt.date) -> dict[str, str]:
    """The raw engagement files (-> fingerprint) the stored build of `day` was made from."""
    sources = _detail(output_root, day).get("sources")
    return sources if isinstance(sources, dict) else {}


def exposures_built_from(output_root: str, day: dt.date) -> dict[str, str]:
    """The exposure log files (-> fingerprint) the stored build of `day` read (empty: the day had none)."""
    sources = _detail(output_root, day).get("exposure_sources")
    return sources if isinstance(sources, dict) else {}


def listener_shards(output_root: str, day: dt.date) -> int | None:
    """How the stored build's lift facts are sharded; None when the build predates them."""
    shards = _detail(output_root, day).get("listener_shards")
    return shards if isinstance(shards, int) and not isinstance(shards, bool) else None


def mark_complete(output_root: str, day: dt.date, build_dir: str, sources: dict[str, str],
                  exposure_sources: dict[str, str] | None = None, listener_shards: int | None = None) -> None:
    """Make a build the day's aggregates: details first, then the marker."""
    root = layout.aggregates_day(output_root, day)
    build = build_dir.rstrip("/").rsplit("/", 1)[-1]
    detail = {"build": build, "sources": sources, "exposure_sources": exposure_sources or {},
              "listener_shards": listener_shards, "built_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    storage.write_bytes(storage.join(root, layout.AGGREGATE_MARKER_DETAIL), json.dumps(detail, indent=2).encode())
    storage.write_bytes(storage.join(root, layout.AGGREGATE_MARKER), build.encode())
