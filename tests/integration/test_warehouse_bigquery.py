"""jobs.warehouse_bigquery against the real BigQuery emulator (bqemulator)."""
from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.warehouse.base import WarehouseError, partition_date
from jobs.warehouse.bigquery import BigQueryWarehouse
from jobs.warehouse.duckdb import DuckDBWarehouse
from schemas import (CAMPAIGN_DELIVERY, CAMPAIGN_LIFT, CAPACITY, DELIVERY_RECONCILIATION, OUTPUTS, PRICES,
                     PROMOTION_SCORES, SNAPSHOTS)

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
        PRICES.name: _rows(PRICES, [dict(market=m, surface=s, constraint=c, key=f"k{k}") for m, s in cells
                                    for c in ("capacity", "track_cap") for k in range(2)],
                           score_date, snapshot_id, variant),
        # the reconciliation is of the logs day, the day before the score date
        DELIVERY_RECONCILIATION.name: _rows(DELIVERY_RECONCILIATION, [
            dict(track_id=f"t{k}", market=m, surface=s) for m, s in cells for k in range(tracks)],
            score_date - dt.timedelta(days=1), snapshot_id, variant),
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
        "validation": "all passed",
        "skipped_gates": "",
        "is_current": False,
        "pulled_at": None,
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
    assert names == {"promotion_scores", "campaign_delivery", "capacity", "prices", "delivery_reconciliation",
                     "campaign_lift", "snapshots", "promotion_scores_latest", "campaign_delivery_latest",
                     "capacity_latest", "prices_latest", "delivery_reconciliation_latest", "campaign_lift_latest",
                     "fair_exposure"}


def test_republishing_a_date_replaces_it(bq_env):
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1", variant=0, tracks=3))
    wh.publish(D2, *snapshot(D2, "s0", variant=0, tracks=3))  # another date: untouched
    before_d2 = rows(wh, "SELECT * FROM promotion_scores WHERE score_date = ? ORDER BY market, surface, track_id", [D2])

    tables, reg = snapshot(D1, "s2", variant=1, tracks=2, created_at=T0 + dt.timedelta(hours=1))
    wh.publish(D1, tables, reg)
    wh.publish(D1, tables, reg)  # the same snapshot again: a rerun never duplicates

    for name, table in tables.items():
        got = rows(wh, f"SELECT * FROM {name} WHERE score_date = ?", [partition_date(OUTPUTS[name], D1)])
        want = expected_rows(table, name)
        key = lambda r: tuple(r[k] for k in OUTPUTS[name].key)  # noqa: E731
        assert sorted(got, key=key) == want, name
    assert rows(wh, "SELECT score_date, COUNT(*) AS n FROM promotion_scores GROUP BY score_date "
                    "ORDER BY score_date") == [{"score_date": D1, "n": 8}, {"score_date": D2, "n": 12}]
    assert rows(wh, "SELECT * FROM promotion_scores WHERE score_date = ? ORDER BY market, surface, "
                    "track_id", [D2]) == before_d2
    assert [r["snapshot_id"] for r in rows(wh, "SELECT snapshot_id FROM snapshots ORDER BY snapshot_id")] \
        == ["s0", "s1", "s2"]


def test_reconciliation_replaces_the_logs_day(bq_env):
    """delivery_reconciliation's rows are of the day before the snapshot's score
    date: a publish replaces that day's rows (a rerun never duplicates them, the
    next date's snapshot leaves them), and a snapshot written before the table
    existed (a rollback to it) leaves the table as it is."""
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1", tracks=3))
    wh.publish(D2, *snapshot(D2, "s2", tracks=2))
    tables, reg = snapshot(D2, "s3", variant=1, tracks=1, created_at=T0 + dt.timedelta(hours=1))
    wh.publish(D2, tables, reg)
    wh.publish(D2, tables, reg)
    count = "SELECT score_date, snapshot_id, COUNT(*) AS n FROM delivery_reconciliation GROUP BY 1, 2 ORDER BY 1"
    assert rows(wh, count) == [{"score_date": D1 - dt.timedelta(days=1), "snapshot_id": "s1", "n": 12},
                               {"score_date": D1, "snapshot_id": "s3", "n": 4}]
    old, old_reg = snapshot(D1, "s0", variant=2)
    del old["delivery_reconciliation"]
    wh.publish(D1, old, old_reg)
    assert rows(wh, count)[0] == {"score_date": D1 - dt.timedelta(days=1), "snapshot_id": "s1", "n": 12}
    assert {r["snapshot_id"] for r in rows(wh, "SELECT snapshot_id FROM promotion_scores WHERE score_date = ?",
                                           [D1])} == {"s0"}


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
    for t in (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, PRICES, SNAPSHOTS):
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


def _create_drifted(bq_env, table, *, schema_change=None, partitioned=True, clustered=True):
    """Create `table` in the dataset the way someone else might have: the contract's
    schema with `schema_change(fields)` applied, partitioned and clustered or not."""
    from google.cloud import bigquery

    client = bq_env.client()
    client.create_dataset(f"{bq_env.project}.{bq_env.dataset}", exists_ok=True)
    fields = [bigquery.SchemaField.from_api_repr(f) for f in table.bigquery()]
    if schema_change:
        fields = schema_change(fields)
    t = bigquery.Table(f"{bq_env.project}.{bq_env.dataset}.{table.name}", schema=fields)
    if partitioned:
        t.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                        field="score_date")
    if clustered:
        t.clustering_fields = ["market", "surface"]
    client.create_table(t)


def _retyped(name: str, new_type: str):
    from google.cloud import bigquery

    def change(fields):
        return [bigquery.SchemaField(f.name, new_type, mode=f.mode) if f.name == name else f for f in fields]
    return change


@pytest.mark.parametrize("drift, expected", [
    (dict(schema_change=_retyped("score", "STRING")), "('score', 'STRING', 'REQUIRED')"),
    (dict(schema_change=lambda fs: [f for f in fs if f.name != "reason"]), "schema ["),
    (dict(partitioned=False), "partitioning None != DAY on score_date"),
    (dict(clustered=False), "clustering None != ['market', 'surface']"),
])
def test_an_existing_table_that_drifted_from_the_contract_is_refused(bq_env, drift, expected):
    """The refusal itself (`_check_layout`), reached: a promotion_scores table
    created beforehand with a drifted schema or layout makes the warehouse
    refuse before loading anything, naming the table and what differs.
    Catches a warehouse that silently uses (and then loads into) a table that
    no longer matches schemas/tables.py."""
    _create_drifted(bq_env, PROMOTION_SCORES, **drift)
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    with pytest.raises(WarehouseError) as e:
        wh.publish(D1, *snapshot(D1, "s1"))
    message = str(e.value)
    assert message.startswith(f"existing table {bq_env.project}.{bq_env.dataset}.promotion_scores "
                              "does not match the contract: "), message
    assert expected in message, message
    # refused before any load: no staging table, no row, no registry entry
    assert staging_tables(bq_env) == []
    client = bq_env.client()
    n = client.query(f"SELECT COUNT(*) AS n FROM `{bq_env.project}.{bq_env.dataset}.promotion_scores`").result()
    assert [r["n"] for r in n] == [0]
    names = {t.table_id for t in client.list_tables(f"{bq_env.project}.{bq_env.dataset}")}
    assert "snapshots" not in names or not list(
        client.query(f"SELECT * FROM `{bq_env.project}.{bq_env.dataset}.snapshots`").result())


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
        "SELECT * FROM delivery_reconciliation_latest ORDER BY market, surface, track_id",
        "SELECT score_date, snapshot_id, COUNT(*) AS n, SUM(plays) AS plays FROM promotion_scores "
        "GROUP BY score_date, snapshot_id ORDER BY score_date, snapshot_id",
        "SELECT * FROM prices_latest AS p ORDER BY p.market, p.surface, p.constraint, p.key",
        "SELECT * FROM fair_exposure ORDER BY score_date, market, surface, size_decile",
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


def test_a_rollback_moves_the_current_snapshot_and_removes_pulled_rows(bq_env, tmp_path):
    """Lifecycle: the registry knows which snapshot is current and which were
    pulled, and the *_latest views follow it, the same on BigQuery and DuckDB
    (on main the views kept showing the newest registered snapshot after a
    rollback, and a pulled snapshot's rows stayed)."""
    bq = BigQueryWarehouse.from_uri(bq_env.uri)
    duck = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    for wh in (bq, duck):
        wh.publish(D1, *snapshot(D1, "s1", variant=0), current=True)
        wh.publish(D2, *snapshot(D2, "s2", variant=1, created_at=T0 + dt.timedelta(hours=1)), current=True)
        assert {r["snapshot_id"] for r in rows(wh, "SELECT snapshot_id FROM promotion_scores_latest")} == {"s2"}
        wh.set_current("s1", pulled=["s2"])
        wh.set_current("s1", pulled=["s2"])  # idempotent: a repair may run it again
    queries = ["SELECT snapshot_id, score_date, is_current, pulled_at IS NOT NULL AS pulled FROM snapshots "
               "ORDER BY snapshot_id",
               "SELECT DISTINCT snapshot_id FROM promotion_scores_latest",
               "SELECT score_date, snapshot_id, COUNT(*) AS n FROM promotion_scores GROUP BY score_date, snapshot_id "
               "ORDER BY score_date"]
    for sql in queries:
        assert bq.query(sql).to_pylist() == duck.query(sql).to_pylist(), sql
    assert rows(bq, queries[0]) == [
        {"snapshot_id": "s1", "score_date": D1, "is_current": True, "pulled": False},
        {"snapshot_id": "s2", "score_date": D2, "is_current": False, "pulled": True}]
    assert rows(bq, queries[2]) == [{"score_date": D1, "snapshot_id": "s1", "n": 12}]
    reg, problems = bq.registry()
    assert not problems and {r.snapshot_id: (r.is_current, r.pulled_at is not None) for r in reg} == {
        "s1": (True, False), "s2": (False, True)}
    with pytest.raises(WarehouseError, match="not a snapshot id"):
        bq.set_current("s1'; DROP TABLE snapshots; --", pulled=[])


def test_a_registry_made_by_an_older_oasis_gains_the_new_columns(bq_env):
    """An existing `snapshots` table without the new nullable columns is
    widened in place (rows kept), not refused as a schema mismatch."""
    from google.cloud import bigquery

    client = bq_env.client()
    client.create_dataset(f"{bq_env.project}.{bq_env.dataset}")
    old = [bigquery.SchemaField.from_api_repr(f) for f in SNAPSHOTS.bigquery()[:9]]
    table = bigquery.Table(f"{bq_env.project}.{bq_env.dataset}.snapshots", schema=old)
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="score_date")
    client.create_table(table)
    wh = BigQueryWarehouse.from_uri(bq_env.uri)
    wh.publish(D1, *snapshot(D1, "s1"), current=True)
    got = client.get_table(f"{bq_env.project}.{bq_env.dataset}.snapshots")
    assert [f.name for f in got.schema] == SNAPSHOTS.names
    assert rows(wh, "SELECT snapshot_id, is_current FROM snapshots") == [{"snapshot_id": "s1", "is_current": True}]


def test_check_names_missing_credentials_before_any_work(monkeypatch, tmp_path):
    """Preflight: a BigQuery warehouse without credentials fails the check a run
    makes before its pipeline, with the fix; on main it failed at the publish."""
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(WarehouseError, match="no Google credentials for bq://test-project.ds"):
        BigQueryWarehouse.from_uri("bq://test-project.ds").check()


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


def _older(table, dropped: int):
    """The table's contract as an older version had it: its last columns not yet added."""
    from schemas import Table

    return Table(table.name, table.fields[:len(table.fields) - dropped], table.doc, table.key)


ADDED = {PROMOTION_SCORES.name: 9, CAPACITY.name: 4}   # the nullable columns added by the forecast model


@pytest.mark.parametrize("backend", ["bigquery", "duckdb"])
def test_a_table_created_before_columns_were_added_gains_them(bq_env, tmp_path, backend):
    """A warehouse an older version created (its tables without the columns
    added since) takes a new snapshot: the columns are added, older rows read
    null there, and nothing else about the tables changes."""
    from jobs.warehouse.bigquery import _bq_schema

    if backend == "bigquery":
        wh = BigQueryWarehouse.from_uri(bq_env.uri)
        client = bq_env.client()
        client.create_dataset(f"{bq_env.project}.{bq_env.dataset}", exists_ok=True)
        from google.cloud import bigquery

        for name, dropped in ADDED.items():
            old = _older(OUTPUTS[name], dropped)
            t = bigquery.Table(f"{bq_env.project}.{bq_env.dataset}.{name}", schema=_bq_schema(old))
            t.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="score_date")
            t.clustering_fields = ["market", "surface"]
            client.create_table(t)
            before = _rows(old, [dict(track_id="t0", market="SE", surface="radio", campaign_id="c0")]
                           if name == PROMOTION_SCORES.name else [dict(market="SE", surface="radio")], D1, "old", 1)
            client.insert_rows(client.get_table(t.reference), before.to_pylist(), selected_fields=_bq_schema(old))
    else:
        import duckdb

        path = str(tmp_path / "w.duckdb")
        wh = DuckDBWarehouse(path)
        with duckdb.connect(path) as con:
            for name, dropped in ADDED.items():
                old = _older(OUTPUTS[name], dropped)
                con.register("_old", _rows(old, [dict(track_id="t0", market="SE", surface="radio", campaign_id="c0")]
                                           if name == PROMOTION_SCORES.name else [dict(market="SE", surface="radio")],
                                           D1, "old", 1))
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _old')
    wh.publish(D2, *snapshot(D2, "s2"))
    for name, dropped in ADDED.items():
        got = rows(wh, f"SELECT * FROM {name} ORDER BY score_date")
        assert list(got[0]) == OUTPUTS[name].names
        old_rows = [r for r in got if r["score_date"] == D1]
        assert len(old_rows) == 1 and all(old_rows[0][c] is None for c in OUTPUTS[name].names[-dropped:])
        assert len([r for r in got if r["score_date"] == D2]) > 0
