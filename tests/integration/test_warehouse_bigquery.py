"""jobs.warehouse_bigquery against the real BigQuery emulator (bqemulator)."""
from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.warehouse.base import WarehouseError
from jobs.warehouse.duckdb import DuckDBWarehouse
from jobs.warehouse.bigquery import BigQueryWarehouse
from schemas import CAMPAIGN_DELIVERY, CAMPAIGN_LIFT, CAPACITY, OUTPUTS, PROMOTION_SCORES, SNAPSHOTS

pytestmark = pytest.mark.emulator

D1 = dt.date(2024, 5, 2)
D2 = dt.date(2024, 5, 3)
MARKETS = ("SE", "US")
SURFACES = ("radio", "mixes")
T0 = dt.datetime(2024, 5, 2, 6, 0, tzinfo=dt.timezone.utc)


# ------------------------------------------------------------------ data ---
def _value(field, i: int, variant: int):
    if field.nullable and i % 2 == 0:
        return None
    return {
        "string": lambda: f"{field.name}-{i}-{variant}",
        "bool": lambda: (i + variant) % 2 == 0,
        "int64": lambda: i * 10 + variant,
        "double": lambda: round(i * 0.25 + variant * 0.01, 6),
        "date": lambda: dt.date(2024, 1, 1) + dt.timedelta(days=i),
        "timestamp": lambda: T0 + dt.timedelta(minutes=i),
    }[field.type]()


def _rows(table, keys: list[dict], score_date, snapshot_id, variant) -> pa.Table:
    rows = []
    for i, key in enumerate(keys):
        row = {f.name: _value(f, i, variant) for f in table.fields}
        row.update(key, score_date=score_date, snapshot_id=snapshot_id)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=table.arrow())


def snapshot(score_date: dt.date, snapshot_id: str, variant: int = 0, tracks: int = 3,
             created_at: dt.datetime | None = None):
    """(tables, registry row) of one small snapshot, conforming to schemas.OUTPUTS."""
    cells = [(m, s) for m in MARKETS for s in SURFACES]
    tables = {
        PROMOTION_SCORES.name: _rows(PROMOTION_SCORES, [
            dict(track_id=f"t{k}", market=m, surface=s, campaign_id=f"c{k % 2}")
            for m, s in cells for k in range(tracks)], score_date, snapshot_id, variant),
        CAMPAIGN_DELIVERY.name: _rows(CAMPAIGN_DELIVERY, [
            dict(campaign_id=f"c{k}", market=m, surface=s) for m, s in cells for k in range(2)],
            score_date, snapshot_id, variant),
        CAPACITY.name: _rows(CAPACITY, [dict(market=m, surface=s) for m, s in cells],
                             score_date, snapshot_id, variant),
        CAMPAIGN_LIFT.name: _rows(CAMPAIGN_LIFT, [dict(campaign_id=f"c{k}", market=m, surface=s, method="exposures",
                                                       licensor_id=f"l{k}")
                                                  for m, s in cells for k in range(2)], score_date, snapshot_id,
                                  variant),
    }
    registry = {
        "snapshot_id": snapshot_id,
        "score_date": score_date,
        "created_at": created_at or T0,
        "code_version": "test",
        "run_fingerprint": f"fp-{snapshot_id}",
        **{f"{name}_rows": t.num_rows for name, t in tables.items() if f"{name}_rows" in SNAPSHOTS.names},
        "manifest_uri": f"gs://bucket/snapshots/score_date={score_date}/{snapshot_id}/_MANIFEST.json",
    }
    return tables, registry


def rows(wh, sql: str, params=None) -> list[dict]:
    return wh.query(sql, params).to_pylist()


def table_rows(wh, name: str) -> list[dict]:
    t = OUTPUTS.get(name) or SNAPSHOTS
    order = ", ".join(t.key or t.names[:4])
    return rows(wh, f"SELECT * FROM {name} ORDER BY {order}")


def expected_rows(table: pa.Table, name: str) -> list[dict]:
    t = OUTPUTS[name]
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in t.key))


def staging_tables(bq_env) -> list[str]:
    return [t.table_id for t in bq_env.client().list_tables(f"{bq_env.project}.{bq_env.dataset}")
            if t.table_id.startswith("_staging_")]


# ----------------------------------------------------------------- tests ---
def test_publish_loads_every_table(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    tables, reg = snapshot(D1, "s1")
    wh.publish(D1, tables, reg)

    for name, table in tables.items():
        assert table_rows(wh, name) == expected_rows(table, name), name
    assert rows(wh, "SELECT * FROM snapshots") == [reg]
    assert staging_tables(bq_env) == []
    names = {t.table_id for t in bq_env.client().list_tables(f"{bq_env.project}.{bq_env.dataset}")}
    assert names == {"promotion_scores", "campaign_delivery", "capacity", "campaign_lift", "snapshots",
                     "promotion_scores_latest", "campaign_delivery_latest", "capacity_latest",
                     "campaign_lift_latest"}


def test_republishing_a_date_replaces_it(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1", variant=0, tracks=3))
    wh.publish(D2, *snapshot(D2, "s0", variant=0, tracks=3))  # another date: untouched
    before_d2 = rows(wh, "SELECT * FROM promotion_scores WHERE score_date = ? ORDER BY market, surface, track_id", [D2])

    tables, reg = snapshot(D1, "s2", variant=1, tracks=2, created_at=T0 + dt.timedelta(hours=1))
    wh.publish(D1, tables, reg)
    wh.publish(D1, tables, reg)  # the same snapshot again: a rerun never duplicates

    for name, table in tables.items():
        got = rows(wh, f"SELECT * FROM {name} WHERE score_date = ?", [D1])
        want = expected_rows(table, name)
        key = lambda r: tuple(r[k] for k in OUTPUTS[name].key)  # noqa: E731
        assert sorted(got, key=key) == want, name
    assert rows(wh, "SELECT score_date, COUNT(*) AS n FROM promotion_scores GROUP BY score_date "
                    "ORDER BY score_date") == [{"score_date": D1, "n": 8}, {"score_date": D2, "n": 12}]
    assert rows(wh, "SELECT * FROM promotion_scores WHERE score_date = ? ORDER BY market, surface, "
                    "track_id", [D2]) == before_d2
    assert [r["snapshot_id"] for r in rows(wh, "SELECT snapshot_id FROM snapshots ORDER BY snapshot_id")] \
        == ["s0", "s1", "s2"]


def test_latest_views_show_the_newest_snapshot(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"))
    newest_tables, newest = snapshot(D2, "s2", variant=2, created_at=T0 + dt.timedelta(hours=1))
    wh.publish(D2, newest_tables, newest)
    # a backfill of the older date, made later, does not become "latest"
    wh.publish(D1, *snapshot(D1, "s3", variant=3, created_at=T0 + dt.timedelta(hours=2)))

    for name, table in newest_tables.items():
        got = rows(wh, f"SELECT * FROM {name}_latest")
        key = lambda r: tuple(r[k] for k in OUTPUTS[name].key)  # noqa: E731
        assert sorted(got, key=key) == expected_rows(table, name), name

    # a newer snapshot of the newest date takes over
    tables, reg = snapshot(D2, "s4", variant=4, tracks=1, created_at=T0 + dt.timedelta(hours=3))
    wh.publish(D2, tables, reg)
    assert {r["snapshot_id"] for r in rows(wh, "SELECT snapshot_id FROM promotion_scores_latest")} == {"s4"}
    assert rows(wh, "SELECT COUNT(*) AS n FROM promotion_scores_latest") == [{"n": 4}]


def test_tables_are_partitioned_and_clustered(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"))
    client = bq_env.client()
    for t in (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, SNAPSHOTS):
        got = client.get_table(f"{bq_env.project}.{bq_env.dataset}.{t.name}")
        assert got.time_partitioning.field == "score_date"
        assert got.time_partitioning.type_ == "DAY"
        assert got.clustering_fields == (None if t is SNAPSHOTS else ["market", "surface"])
        assert [f.to_api_repr() | {"description": f.description or ""} for f in got.schema] == [
            {**f, "description": f["description"] or ""} for f in
            [bigquery_field(x) for x in t.bigquery()]], t.name

    # INFORMATION_SCHEMA through a plain client: the emulator mistranslates it
    # when the job has a default dataset, as BigQueryWarehouse.query sets.
    info = lambda sql: client.query(sql).to_arrow(create_bqstorage_client=False).to_pylist()  # noqa: E731
    cols = info(f"SELECT table_name, column_name, is_partitioning_column, clustering_ordinal_position "
                    f"FROM `{bq_env.project}.{bq_env.dataset}.INFORMATION_SCHEMA.COLUMNS` "
                    "WHERE table_name = 'promotion_scores' AND (is_partitioning_column = 'YES' "
                    "OR clustering_ordinal_position IS NOT NULL) ORDER BY column_name")
    assert cols == [
        {"table_name": "promotion_scores", "column_name": "market", "is_partitioning_column": "NO",
         "clustering_ordinal_position": 1},
        {"table_name": "promotion_scores", "column_name": "score_date", "is_partitioning_column": "YES",
         "clustering_ordinal_position": None},
        {"table_name": "promotion_scores", "column_name": "surface", "is_partitioning_column": "NO",
         "clustering_ordinal_position": 2},
    ]
    parts = info(f"SELECT partition_id, total_rows FROM `{bq_env.project}.{bq_env.dataset}."
                     "INFORMATION_SCHEMA.PARTITIONS` WHERE table_name = 'promotion_scores'")
    assert parts == [{"partition_id": "20240502", "total_rows": 12}]


def bigquery_field(api_repr: dict) -> dict:
    from google.cloud import bigquery

    return bigquery.SchemaField.from_api_repr(api_repr).to_api_repr()


def test_a_failed_staging_load_leaves_the_date_whole(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"))
    before = {name: table_rows(wh, name) for name in (*OUTPUTS, "snapshots")}

    tables, reg = snapshot(D1, "s2", variant=5)
    # promotion_scores stages fine; campaign_delivery has a column of the wrong type
    bad = tables["campaign_delivery"]
    i = bad.schema.get_field_index("planned")
    tables["campaign_delivery"] = bad.set_column(i, "planned", pa.array(["lots"] * len(bad)))
    with pytest.raises(WarehouseError, match="campaign_delivery"):
        wh.publish(D1, tables, reg)

    assert {name: table_rows(wh, name) for name in before} == before
    assert staging_tables(bq_env) == []


def test_a_failed_transaction_rolls_back(bq_env):
    """The staging loads succeed, the transaction fails at its last table: the
    deletes and inserts it already ran on the other tables are rolled back."""
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"))
    before = {name: table_rows(wh, name) for name in ("promotion_scores", "campaign_delivery", "snapshots")}
    # the schema drifts behind the (already ensured) warehouse's back
    bq_env.client().query(f"ALTER TABLE `{bq_env.project}.{bq_env.dataset}.capacity` "
                          "DROP COLUMN shadow_price").result()

    with pytest.raises(WarehouseError, match="rolled back"):
        wh.publish(D1, *snapshot(D1, "s2", variant=6))

    assert {name: table_rows(wh, name) for name in before} == before
    assert staging_tables(bq_env) == []


@pytest.mark.parametrize("uri", [
    "bq://test-project.x; DROP TABLE y",
    "bq://test-project.a-b",
    "bq://test-project.",
    "bq://test-project",
    "bq://test-project.a.b",
    "bq://Bad_Project.ds",
    "bq://x.ds",
    "bq://test-project.`ds`",
    "duckdb:///tmp/x.duckdb",
])
def test_bad_names_are_rejected_before_any_request(bq_env, uri):
    client = bq_env.client()
    datasets = sorted(d.dataset_id for d in client.list_datasets())
    with pytest.raises(WarehouseError):
        BigQueryWarehouse.from_uri(uri).ensure()
    with pytest.raises(WarehouseError):
        project, _, dataset = uri[len("bq://"):].partition(".")
        BigQueryWarehouse(project, dataset)
    assert sorted(d.dataset_id for d in client.list_datasets()) == datasets


def test_publish_validates_its_arguments(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    tables, reg = snapshot(D1, "s1")
    with pytest.raises(WarehouseError, match="datetime.date"):
        wh.publish(dt.datetime(2024, 5, 2), tables, reg)
    with pytest.raises(WarehouseError, match="registry score_date"):
        wh.publish(D2, *snapshot(D1, "s1"))
    with pytest.raises(WarehouseError, match="capacity"):
        wh.publish(D1, {k: v for k, v in tables.items() if k != "capacity"}, reg)
    other_date, _ = snapshot(D2, "s1")
    with pytest.raises(WarehouseError, match="other than"):
        wh.publish(D1, {**tables, "capacity": other_date["capacity"]}, reg)
    assert table_rows(wh, "promotion_scores") == []
    assert staging_tables(bq_env) == []


def test_query_parameters(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"))
    got = wh.query("SELECT market, COUNT(*) AS n FROM promotion_scores WHERE score_date = ? AND "
                   "surface = ? GROUP BY market ORDER BY market", [D1, "radio"])
    assert isinstance(got, pa.Table)
    assert got.to_pylist() == [{"market": "SE", "n": 3}, {"market": "US", "n": 3}]
    got = wh.query("SELECT track_id FROM promotion_scores WHERE market IN UNNEST(@markets) AND "
                   "surface = @surface AND plays >= @min_plays ORDER BY track_id",
                   {"markets": ["US"], "surface": "mixes", "min_plays": 100})
    assert got.column("track_id").to_pylist() == ["t1", "t2"]


def test_same_answers_as_duckdb(bq_env, tmp_path):
    bq = BigQueryWarehouse.from_uri(bq_env.uri)
    duck = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    published = [
        (D1, *snapshot(D1, "s1", variant=0)),
        (D2, *snapshot(D2, "s2", variant=1, created_at=T0 + dt.timedelta(hours=1))),
        (D2, *snapshot(D2, "s3", variant=2, tracks=2, created_at=T0 + dt.timedelta(hours=2))),
    ]
    for wh in (bq, duck):
        for score_date, tables, reg in published:
            wh.publish(score_date, tables, reg)

    queries = [
        "SELECT * FROM promotion_scores_latest ORDER BY market, surface, track_id",
        "SELECT * FROM campaign_delivery_latest ORDER BY market, surface, campaign_id",
        "SELECT * FROM capacity_latest ORDER BY market, surface",
        "SELECT score_date, snapshot_id, COUNT(*) AS n, SUM(plays) AS plays FROM promotion_scores "
        "GROUP BY score_date, snapshot_id ORDER BY score_date, snapshot_id",
    ]
    for sql in queries:
        assert bq.query(sql).to_pylist() == duck.query(sql).to_pylist(), sql
    latest = bq.query(queries[0]).to_pylist()
    assert latest and {r["snapshot_id"] for r in latest} == {"s3"}
    # the analysts' campaign_lift queries (docs/analysts.md), on rows: the end-to-end run's world has no
    # campaign with 10 days of flight, so they are checked here
    lift_queries = [(n, q) for n, q in analyst_queries() if "campaign_lift" in q]
    assert {n for n, _ in lift_queries} >= {"lift_by_campaign", "lift_by_licensor", "lift_by_artist_size"}
    for name, sql in lift_queries:
        got, want = bq.query(sql).to_pylist(), duck.query(sql).to_pylist()
        assert got, f"{name}: no rows on BigQuery"
        assert _same(got, want), f"{name}:\nBigQuery {got[:3]}\nDuckDB   {want[:3]}"


def analyst_queries() -> list[tuple[str, str]]:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "analysts.md").read_text()
    return [(name, sql) for sql, name in re.findall(r"```sql\n(-- name: ([A-Za-z0-9_]+)\n.*?)```", doc, re.S)]


def _same(x: list[dict], y: list[dict]) -> bool:
    """Equal rows, floats to 1e-9 (the two engines may round a sum differently in the last bit)."""
    return len(x) == len(y) and all(
        a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9)
                                     if isinstance(a[k], float) and isinstance(b[k], float) else a[k] == b[k]
                                     for k in a) for a, b in zip(x, y))


def test_bigquery_emulator_loads_from_the_gcs_emulator(gcs_env, bq_env):
    """The fixtures wire BQEMU_GCS_LOCAL_ROOT to the GCS emulator's storage, so a
    gs:// load job sees what the storage layer wrote."""
    from google.cloud import bigquery

    from jobs.warehouse.base import parquet_bytes
    from pipelines import storage

    tables, _ = snapshot(D1, "s1")
    uri = f"{gcs_env.root}/snapshots/score_date={D1}/s1/capacity/part-0.parquet"
    storage.write_bytes(uri, parquet_bytes(tables["capacity"]))
    client = bq_env.client()
    client.create_dataset(f"{bq_env.project}.{bq_env.dataset}")
    schema = [bigquery.SchemaField.from_api_repr(f) for f in CAPACITY.bigquery()]
    job = client.load_table_from_uri(uri, f"{bq_env.project}.{bq_env.dataset}.cap", job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, schema=schema))
    job.result()
    got = client.query(f"SELECT * FROM `{bq_env.project}.{bq_env.dataset}.cap` ORDER BY market, surface")
    assert got.to_arrow(create_bqstorage_client=False).to_pylist() == expected_rows(tables["capacity"], "capacity")
