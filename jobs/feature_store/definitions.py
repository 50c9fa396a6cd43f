"""The Feast feature repository of OASIS, as Python objects derived from `schemas`.

Feature views (project `oasis`):

    promotion_scores   entities track_id, market, surface; the serving columns of
                       the `promotion_scores` table (boost_probability, score,
                       eligible, reason, value, the campaign, artist and
                       licensor ids, flight_end, snapshot_id, score_date) and
                       the snapshot's valid_until
    prices             entities market, surface, constraint, key; bound, slack,
                       price, snapshot_id, score_date (the `prices` table)

With both, serving can rank boosted candidates per request by value minus the
prices of the constraints each one is under (`pipelines.allocation.prices`).

Feast 0.67 gives an entity ONE join key, so a compound key is several entities
on one view. Dates are ISO strings (Feast has no date type), ttl is 0 (no
expiry: the store holds one snapshot, see `jobs.feature_store.repository`), and
the entity key serialisation is pinned at version 3 (the key bytes depend on it).
Bump DEFINITIONS_VERSION when anything here changes: stores built from older
definitions are then rebuilt by the next sync.
"""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

from jobs import layout
from schemas import PRICES, PROMOTION_SCORES

PROJECT = "oasis"
DEFINITIONS_VERSION = 1
ENTITY_KEY_SERIALIZATION_VERSION = 3

SCORE_KEYS = ("track_id", "market", "surface")
SCORE_FEATURES = ("boost_probability", "score", "eligible", "reason", "value", "campaign_id", "artist_id",
                  "licensor_id", "flight_end", "snapshot_id", "score_date")
PRICE_KEYS = ("market", "surface", "constraint", "key")
PRICE_FEATURES = ("bound", "slack", "price", "snapshot_id", "score_date")
VALID_UNTIL = "valid_until"   # a snapshot-level date, on every promotion_scores row
EVENT_TS = "event_ts"         # Feast's timestamp field: the score date, 00:00 UTC

VIEWS = {  # view name -> (table, join keys, features)
    "promotion_scores": (PROMOTION_SCORES, SCORE_KEYS, SCORE_FEATURES + (VALID_UNTIL,)),
    "prices": (PRICES, PRICE_KEYS, PRICE_FEATURES),
}

FEATURE_STORE_YAML = f"""\
project: {PROJECT}
provider: local
registry: {layout.STORE_REGISTRY}
online_store:
  type: sqlite
  path: {layout.STORE_ONLINE}
offline_store:
  type: file
entity_key_serialization_version: {ENTITY_KEY_SERIALIZATION_VERSION}
"""


def _feast_type(table, name: str):
    from feast.types import Bool, Float64, Int64, String

    if name == VALID_UNTIL:
        return String
    return {"double": Float64, "bool": Bool, "int64": Int64, "string": String, "date": String}[
        table.field(name).type]


def feast_objects(snapshot_folder: str) -> list:
    """The entities and feature views, their batch sources in `snapshot_folder`
    (informational: a sync writes the rows itself)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType

    entities = {k: Entity(name=k, join_keys=[k], value_type=ValueType.STRING)
                for k in dict.fromkeys(SCORE_KEYS + PRICE_KEYS)}
    views = [
        FeatureView(
            name=name, entities=[entities[k] for k in keys], ttl=dt.timedelta(0), online=True,
            schema=[Field(name=f, dtype=_feast_type(table, f)) for f in features],
            source=FileSource(name=f"{name}_source", path=layout.table_dir(snapshot_folder, table.name),
                              timestamp_field=EVENT_TS))
        for name, (table, keys, features) in VIEWS.items()
    ]
    return [*entities.values(), *views]


def repo_config(store_dir: str):
    """The RepoConfig of one store (absolute paths; its feature_store.yaml holds
    the same with relative ones, for `feast -c STORE ...` and readers)."""
    from feast import RepoConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    return RepoConfig(
        project=PROJECT, provider="local", repo_path=store_dir,
        registry=layout.store_file(store_dir, layout.STORE_REGISTRY),
        online_store=SqliteOnlineStoreConfig(path=layout.store_file(store_dir, layout.STORE_ONLINE)),
        offline_store={"type": "file"}, entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION)


def feature_frame(view: str, table: pa.Table, score_date: dt.date, valid_until: dt.date) -> pd.DataFrame:
    """The rows one view writes: its keys and features, dates as ISO strings,
    and the event timestamp."""
    _, keys, features = VIEWS[view]
    columns = {}
    for name in keys + features:
        if name == VALID_UNTIL:
            columns[name] = pa.array([valid_until.isoformat()] * table.num_rows, pa.string())
            continue
        column = table.column(name)
        columns[name] = column.cast(pa.string()) if pa.types.is_date(column.type) else column  # ISO
    frame = pa.table(columns).to_pandas()
    frame[EVENT_TS] = pd.Timestamp(score_date.isoformat(), tz="UTC")
    return frame
