"""The daily aggregates a run builds and later runs reuse.

A day's aggregates are complete when `OUT/aggregates/dt=D/_SUCCESS` names a
build folder (`build=<snapshot_id>`); `_SUCCESS.json`, written first, records
the raw files that build was made from (engagement, and the exposure log when
the day had one) and how its lift facts are sharded, so a run that reuses the
build has the same run fingerprint as the run that built it, and the build's
format version (`schemas.AGGREGATE_FORMAT_VERSION`; a build without one is
format 1).
"""
from __future__ import annotations

import datetime as dt
import json
import logging

from jobs import layout
from pipelines import storage
from schemas import AGGREGATE_FORMAT_VERSION

log = logging.getLogger(__name__)


def stored_build(output_root: str, day: dt.date) -> str | None:
    """The name of the complete aggregate build of `day`, if any. A marker that
    does not name a build folder that is there (damaged bytes, a deleted build)
    counts as none, with a warning: the day is then built again from raw."""
    marker = storage.join(layout.aggregates_day(output_root, day), layout.AGGREGATE_MARKER)
    try:
        name = storage.read_bytes(marker)[:256].decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    if not name:
        return None
    folder = storage.join(layout.aggregates_day(output_root, day), name)
    if not layout.is_build_dirname(name) or "/" in name or not storage.list_files(storage.join(folder, "totals")):
        log.warning("%s does not name a complete aggregate build (%r); the day is built again from raw",
                    marker, name[:60])
        return None
    return name


def _detail(output_root: str, day: dt.date) -> dict:
    uri = storage.join(layout.aggregates_day(output_root, day), layout.AGGREGATE_MARKER_DETAIL)
    try:
        detail = json.loads(storage.read_bytes(uri))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return detail if isinstance(detail, dict) else {}


def built_from(output_root: str, day: dt.date) -> dict[str, str]:
    """The raw engagement files (-> fingerprint) the stored build of `day` was made from."""
    sources = _detail(output_root, day).get("sources")
    if not isinstance(sources, dict):
        return {}
    return {k: v for k, v in sources.items() if isinstance(k, str) and isinstance(v, str)}


def stored_format(output_root: str, day: dt.date) -> int:
    """The aggregate format version (`schemas.AGGREGATE_FORMAT_VERSION`) of the
    stored build of `day`: 1 for a build whose details do not say (written
    before formats were recorded)."""
    version = _detail(output_root, day).get("format_version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


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
              "listener_shards": listener_shards, "format_version": AGGREGATE_FORMAT_VERSION,
              "built_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    storage.write_bytes(storage.join(root, layout.AGGREGATE_MARKER_DETAIL), json.dumps(detail, indent=2).encode())
    storage.write_bytes(storage.join(root, layout.AGGREGATE_MARKER), build.encode())
