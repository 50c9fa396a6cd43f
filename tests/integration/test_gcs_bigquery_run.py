"""`oasis run` with gs:// input and output and a BigQuery warehouse, end to end
against the real GCS and BigQuery emulators.

One sample world is uploaded to a fresh bucket; the module then walks one
warehouse through a day of operations, each step a module fixture that the
next builds on:

  first     `oasis run` in a real subprocess (snapshot A of score date SD)
  rerun     the same run again: "already published", nothing added
  backfill  the day before (snapshot B of SD-1), published after A
  forced    `--force` on SD (snapshot C replaces A; B is now the snapshot
            before it, whose plan of DAY it reconciles)

and checks the bucket, the warehouse, the `*_latest` views and the analysts'
example queries (docs/analysts.md) on BigQuery against DuckDB. A publish that
BigQuery refuses and names that must never reach SQL come last.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import time
import uuid
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs.run.daily  # noqa: F401 - imported up front: the timings below exclude importing Beam
from jobs import layout
from jobs.cli import main as cli
from jobs.manifest import Manifest
from jobs.run.fingerprint import code_version
from jobs.snapshots import store as publish
from jobs.warehouse.base import partition_date, registry_row
from jobs.warehouse.bigquery import BigQueryWarehouse
from jobs.warehouse.duckdb import DuckDBWarehouse
from pipelines import storage
from schemas import FORECAST_ACCURACY, OUTPUTS, SNAPSHOTS
from tests.support import emulators, worlds

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]
ANALYSTS_DOC = ROOT / "docs" / "analysts.md"
DAY = worlds.END
SD = DAY + dt.timedelta(days=1)  # the score date of a run with --date DAY
TABLES = (*OUTPUTS, SNAPSHOTS.name)
MAY_BE_EMPTY = ("campaign_lift",)  # no flight has 10 days in the logs of this small world


def at_date(rows: int, sid: str, day) -> dict:
    """What a table holds for one score date in the warehouse: {day: (rows, (snapshot id,))}, or
    nothing for a table without rows."""
    return {day: (rows, (sid,))} if rows else {}


KEYS = {t: ", ".join(OUTPUTS[t].key) for t in OUTPUTS} | {"snapshots": "snapshot_id"}


def day_of(name: str, score_date: dt.date) -> dt.date:
    """The warehouse date a snapshot of `score_date` fills in table `name`
    (delivery_reconciliation's rows are of the day before)."""
    return partition_date(OUTPUTS[name], score_date)


def analyst_queries() -> list[tuple[str, str]]:
    """(name, sql) of every ```sql block of docs/analysts.md whose first line is
    `-- name: NAME`: the test runs the documented text itself."""
    blocks = re.findall(r"```sql\n(-- name: ([A-Za-z0-9_]+)\n.*?)```", ANALYSTS_DOC.read_text(), re.S)
    return [(name, sql) for sql, name in blocks]


@dataclass
class Cloud:
    bucket: str
    project: str
    dataset: str
    gcs_url: str
    bq_url: str
    published: list = field(default_factory=list)  # (manifest, manifest uri) in warehouse load order
    seconds: dict = field(default_factory=dict)

    @property
    def input(self) -> str:
        return f"gs://{self.bucket}/in"

    @property
    def output(self) -> str:
        return f"gs://{self.bucket}/out"

    @property
    def warehouse(self) -> str:
        return f"bq://{self.project}.{self.dataset}"

    def args(self, date: dt.date = DAY, *extra: str) -> list[str]:
        return ["--date", date.isoformat(), "--input", self.input, "--output", self.output,
                "--warehouse", self.warehouse, *extra]

    def gcs(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        return gcs.Client(project=self.project, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": self.gcs_url})

    def bq(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.bq_url))

    def sql(self, query: str) -> list[dict]:
        """A query through a plain client (not the warehouse class, whose
        `ensure` would refuse a drifted table), unqualified names resolved in
        the dataset."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(default_dataset=f"{self.project}.{self.dataset}")
        return self.bq().query(query, job_config=config).result().to_arrow(
            create_bqstorage_client=False).to_pylist()

    def table_rows(self, name: str) -> list[dict]:
        return self.sql(f"SELECT * FROM {name} ORDER BY {KEYS[name]}")

    def counts(self) -> dict:
        """{table: {score_date: (rows, snapshot ids)}} in BigQuery."""
        out = {}
        for name in TABLES:
            rows = self.sql(f"SELECT score_date, snapshot_id, count(*) AS n FROM {name} "
                            "GROUP BY score_date, snapshot_id ORDER BY score_date, snapshot_id")
            per_date: dict = {}
            for r in rows:
                n, ids = per_date.get(r["score_date"], (0, ()))
                per_date[r["score_date"]] = (n + r["n"], ids + (r["snapshot_id"],))
            out[name] = per_date
        return out

    def latest(self) -> str | None:
        return publish.read_latest(self.output).content

    def manifests(self) -> dict[str, dict]:
        """snapshot id -> manifest of every snapshot with a manifest in the bucket."""
        uris = storage.list_files(layout.snapshots_root(self.output), layout.MANIFEST)
        return {m["snapshot_id"]: m for m in (json.loads(storage.read_bytes(u)) for u in uris)}


def oasis(*args: str) -> tuple[int, str, str]:
    """`oasis run ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["run", *args])
    return code, out.getvalue(), err.getvalue()


def manifest_uri(cloud: Cloud, m: dict) -> str:
    return storage.join(publish.snapshot_dir_of(cloud.output, Manifest.from_dict(m)), layout.MANIFEST)


def new_manifest(cloud: Cloud, before: dict) -> dict:
    (m,) = [m for i, m in cloud.manifests().items() if i not in before]
    return m


# ------------------------------------------------------------ the steps ---
@pytest.fixture(scope="module")
def cloud(gcs_emulator, bigquery_emulator, tmp_path_factory):
    for emu in (gcs_emulator, bigquery_emulator):
        if not emu.alive():
            pytest.fail(f"{emu.name} emulator died; log:\n{emu.log_tail()}", pytrace=False)
    from apache_beam.internal.gcp import auth

    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    mp.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.url)
    mp.setenv("GOOGLE_CLOUD_PROJECT", emulators.PROJECT)
    # `oasis run` makes Beam's GCS client anonymous under the emulator; put the
    # process's state back afterwards.
    mp.setattr(auth._Credentials, "_credentials_init", auth._Credentials._credentials_init)
    mp.setattr(auth._Credentials, "_credentials", auth._Credentials._credentials)
    c = Cloud(f"oasis-run-{uuid.uuid4().hex[:12]}", bigquery_emulator.project,
              f"oasis_run_{uuid.uuid4().hex[:12]}", gcs_emulator.url, bigquery_emulator.url)
    c.gcs().create_bucket(c.bucket)
    world = worlds.make_world(str(tmp_path_factory.mktemp("cloud-world")), days=4, tracks=60,
                              events_per_day=3000, markets=2)
    for path in sorted(Path(world).rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{c.input}/{path.relative_to(world).as_posix()}", path.read_bytes())
    try:
        yield c
    finally:
        try:
            c.bq().delete_dataset(f"{c.project}.{c.dataset}", delete_contents=True, not_found_ok=True)
        except Exception:  # cleanup only: the emulator is in-memory
            pass
        mp.undo()
        if c.seconds:
            print(f"\n[gcs+bigquery runs, seconds] {c.seconds}", file=sys.stderr)


STALE_RUN = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ") + "-aaaaaa"
LIVE_RUN = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ") + "-bbbbbb"


@pytest.fixture(scope="module")
def first(cloud):
    """A real `oasis run` process, as the schedule starts it. Before it, the
    scratch folder a killed run left a day ago (it must be removed) and one of a
    run that may still be going (it must stay)."""
    storage.write_bytes(f"{cloud.output}/_scratch/{STALE_RUN}/dt=2026-11-23/part-00000-00000.arrow", b"rows")
    storage.write_bytes(f"{cloud.output}/_scratch/{LIVE_RUN}/dt=2026-11-23/part-00000-00000.arrow", b"rows")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", *cloud.args()], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    cloud.seconds["first (subprocess)"] = round(time.monotonic() - t0, 1)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = next(iter(cloud.manifests().values()))
    cloud.published.append((m, manifest_uri(cloud, m)))
    return proc, m


@pytest.fixture(scope="module")
def rerun(cloud, first):
    # "the same inputs, config and code": the sources must not change under the test
    assert code_version() == first[1]["code_version"], "the package sources changed during the test"
    before = cloud.counts()
    t0 = time.monotonic()
    result = oasis(*cloud.args())
    cloud.seconds["rerun"] = round(time.monotonic() - t0, 1)
    return result, before, cloud.counts()


@pytest.fixture(scope="module")
def backfill(cloud, rerun):
    """The day before, published after SD: an older date loaded later."""
    before = cloud.manifests()
    t0 = time.monotonic()
    code, out, err = oasis(*cloud.args(DAY - dt.timedelta(days=1)))
    cloud.seconds["backfill"] = round(time.monotonic() - t0, 1)
    assert code == 0, err[-4000:]
    m = new_manifest(cloud, before)
    cloud.published.append((m, manifest_uri(cloud, m)))
    return m


@pytest.fixture(scope="module")
def forced(cloud, backfill):
    before_counts, before = cloud.counts(), cloud.manifests()
    t0 = time.monotonic()
    code, out, err = oasis(*cloud.args(DAY, "--force"))
    cloud.seconds["forced"] = round(time.monotonic() - t0, 1)
    assert code == 0, err[-4000:]
    m = new_manifest(cloud, before)
    cloud.published.append((m, manifest_uri(cloud, m)))
    return m, before_counts, cloud.counts()


@pytest.fixture(scope="module")
def backtested(cloud, forced):
    """`oasis backtest` of the two origins before DAY, reading and writing the
    bucket and loading BigQuery; every aggregate it needs is stored already."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["backtest", "--start", (DAY - dt.timedelta(days=2)).isoformat(), "--end",
                         (DAY - dt.timedelta(days=1)).isoformat(), "--input", cloud.input, "--output", cloud.output,
                         "--warehouse", cloud.warehouse])
    cloud.seconds["backtest"] = round(time.monotonic() - t0, 1)
    assert code == 0, err.getvalue()[-4000:]
    (manifest,) = storage.list_files(layout.backtests_root(cloud.output), layout.MANIFEST)
    doc = json.loads(storage.read_bytes(manifest))
    folder = layout.backtest_dir(cloud.output, doc["backtest_id"])
    files = [storage.join(folder, f["path"]) for f in doc["tables"]["forecast_accuracy"]["files"]]
    return doc, files, err.getvalue()


# ---------------------------------------------------------------- tests ---
def test_a_real_process_publishes_to_the_bucket_and_bigquery(cloud, first):
    proc, m = first
    sid = m["snapshot_id"]
    folder = publish.snapshot_dir_of(cloud.output, Manifest.from_dict(m))
    assert m["score_date"] == SD.isoformat() and all(c["passed"] for c in m["validation"])
    assert folder in proc.stdout and cloud.warehouse in proc.stdout
    # the inputs were read from the bucket, fingerprinted by GCS's own checksums
    assert all(u.startswith(cloud.input + "/") and f.startswith("gcs:crc32c=")
               for u, f in m["inputs"]["engagement"].items())
    # the snapshot, its manifest and LATEST are objects in the bucket
    names = {b.name for b in cloud.gcs().list_blobs(cloud.bucket, prefix="out/snapshots/")}
    prefix = f"out/snapshots/score_date={SD}/{sid}/"
    assert {"out/snapshots/LATEST", prefix + "_MANIFEST.json"} <= names
    assert cloud.latest() == f"score_date={SD}/{sid}"
    # the aggregation spilled its shards under the output root, and they are
    # gone; so is the stale folder of a killed run, not that of a live one
    assert m["metrics"]["rows_spilled"] > 0
    scratch = {b.name.split("/")[2] for b in cloud.gcs().list_blobs(cloud.bucket, prefix="out/_scratch/")}
    assert scratch == {LIVE_RUN}
    for name, t in m["tables"].items():
        assert (t["rows"] > 0 or name in MAY_BE_EMPTY) and t["rows"] == sum(f["rows"] for f in t["files"])
        for f in t["files"]:
            assert prefix + f["path"] in names
            data = storage.read_bytes(storage.join(folder, f["path"]))
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
    # BigQuery: the date's rows, the registry row and the views
    counts = cloud.counts()
    for name in OUTPUTS:
        assert counts[name] == at_date(m["tables"][name]["rows"], sid, day_of(name, SD)), name
        if name not in MAY_BE_EMPTY:
            assert cloud.sql(f"SELECT DISTINCT snapshot_id FROM {name}_latest") == [{"snapshot_id": sid}]
    (reg,) = cloud.table_rows("snapshots")
    assert reg["snapshot_id"] == sid and reg["manifest_uri"] == manifest_uri(cloud, m)
    assert reg["promotion_scores_rows"] == m["tables"]["promotion_scores"]["rows"]
    # Beam never went looking for Google credentials (that costs ~25 s)
    assert "Unable to find default credentials" not in proc.stderr


def test_rerunning_the_same_date_adds_nothing(cloud, first, rerun):
    (code, out, err), before, after = rerun
    assert code == 0 and "already published" in out + err
    assert after == before
    assert len(cloud.manifests()) == 1 and cloud.latest().endswith(first[1]["snapshot_id"])


def test_a_backfilled_older_date_leaves_latest_and_the_views_on_the_newest(cloud, first, backfill):
    a = first[1]["snapshot_id"]
    b = backfill["snapshot_id"]
    assert backfill["score_date"] == DAY.isoformat()
    assert cloud.latest() == f"score_date={SD}/{a}"  # a backfill never moves LATEST back
    counts = cloud.counts()
    for name in OUTPUTS:
        if name in MAY_BE_EMPTY and not counts[name]:
            continue
        assert counts[name][day_of(name, DAY)] == (backfill["tables"][name]["rows"], (b,)), name
        assert counts[name][day_of(name, SD)][1] == (a,), name
        # created later, but of an older date: the views stay on the newest date
        assert cloud.sql(f"SELECT DISTINCT snapshot_id FROM {name}_latest") == [{"snapshot_id": a}]


def test_force_replaces_the_date_without_duplicating_it(cloud, first, forced):
    c, before, after = forced
    a, sid = first[1]["snapshot_id"], c["snapshot_id"]
    b = cloud.published[1][0]["snapshot_id"]
    # the same inputs as A, but since A the backfill published B, the snapshot before SD: C reconciles B's plan
    # of DAY with DAY's logs (A had no plan to reconcile), so it is not the same run; B is also the snapshot
    # whose pulled-back rows carry the guardrail's state (hysteresis)
    assert sid != a and c["run_fingerprint"] != first[1]["run_fingerprint"]
    assert c["inputs"]["previous"] == {"snapshot_id": b, "score_date": DAY.isoformat(), "plan_reconciled": True}
    assert first[1]["inputs"]["previous"] == {}
    assert c["previous_snapshot"] == b
    for name in OUTPUTS:
        # delivery_reconciliation's rows are the plan's and the logs' (B's plan added rows); prices has a row per
        # eligible track's constraint, and eligibility follows B's pulled-back rows (the guardrail's hysteresis)
        if name not in ("delivery_reconciliation", "prices"):
            assert {d: n for d, (n, _) in after[name].items()} == {d: n for d, (n, _) in before[name].items()}
        if name in MAY_BE_EMPTY and not after[name]:
            continue
        # the date now holds only the new snapshot; the other date is untouched
        assert after[name][day_of(name, SD)] == (c["tables"][name]["rows"], (sid,))
        assert after[name][day_of(name, DAY)] == before[name][day_of(name, DAY)]
        assert cloud.sql(f"SELECT DISTINCT snapshot_id FROM {name}_latest") == [{"snapshot_id": sid}]
    # the registry keeps the replaced snapshot; LATEST moved to the new one
    assert {r["snapshot_id"] for r in cloud.table_rows("snapshots")} == {
        a, sid, cloud.published[1][0]["snapshot_id"]}
    assert cloud.latest() == f"score_date={SD}/{sid}"


def _same_rows(x: list[dict], y: list[dict]) -> bool:
    if len(x) != len(y):
        return False
    for a, b in zip(x, y):
        if a.keys() != b.keys():
            return False
        for k in a:
            u, v = a[k], b[k]
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif u != v:
                return False
    return True


def test_backtest_reads_the_bucket_and_loads_bigquery(cloud, backtested):
    doc, files, err = backtested
    assert "0 to build from raw" in err and len(doc["origins"]) == 2
    table = pa.concat_tables([pq.read_table(io.BytesIO(storage.read_bytes(f))) for f in files])
    assert table.num_rows == doc["tables"]["forecast_accuracy"]["rows"] > 0
    rows = cloud.sql("SELECT origin_date, count(*) AS n FROM forecast_accuracy GROUP BY origin_date "
                     "ORDER BY origin_date")
    assert [r["origin_date"].isoformat() for r in rows] == doc["origins"]
    assert sum(r["n"] for r in rows) == table.num_rows


def test_analyst_queries_answer_the_same_on_bigquery_and_duckdb(cloud, forced, backtested, tmp_path):
    queries = analyst_queries()
    names = [n for n, _ in queries]
    assert {"todays_scores_for_a_market", "delivery_vs_floor_per_campaign",
            "score_history_of_a_track"} <= set(names) and len(set(names)) == len(names)
    # DuckDB gets the very snapshots BigQuery got, read back from the bucket, in the same order
    duck = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    for m, uri in cloud.published:
        folder = publish.snapshot_dir_of(cloud.output, Manifest.from_dict(m))
        tables = {name: publish.read_table_files([storage.join(folder, f["path"]) for f in meta["files"]], name)
                  for name, meta in m["tables"].items()}
        duck.publish(dt.date.fromisoformat(m["score_date"]), tables, registry_row(Manifest.from_dict(m), uri))
    doc, files, _ = backtested
    accuracy = pa.concat_tables([pq.read_table(io.BytesIO(storage.read_bytes(f))) for f in files])
    duck.replace_range(FORECAST_ACCURACY, dt.date.fromisoformat(doc["start"]), dt.date.fromisoformat(doc["end"]),
                       accuracy)
    bq = BigQueryWarehouse.from_uri(cloud.warehouse)
    (current,) = [r.snapshot_id for r in bq.registry()[0] if r.is_current]  # the one the cloud's LATEST serves
    duck.set_current(current, [])
    answers = {}
    for name, sql in queries:
        answers[name] = got = bq.query(sql).to_pylist()
        want = duck.query(sql).to_pylist()
        # no campaign has 10 days of flight in this world: the campaign_lift queries are checked on rows
        # in test_warehouse_bigquery.py::test_same_answers_as_duckdb
        assert got or "campaign_lift" in sql, f"{name}: no rows on BigQuery"
        assert _same_rows(got, want), f"{name}:\nBigQuery {got[:3]}\nDuckDB   {want[:3]}"
    # the history spans both loaded dates; "today" is the forced snapshot
    assert {r["score_date"] for r in answers["score_history_of_a_track"]} == {DAY, SD}
    assert {r["snapshot_id"] for r in answers["score_history_of_a_track"] if r["score_date"] == SD} == {
        forced[0]["snapshot_id"]}


def test_a_failed_bigquery_publish_leaves_every_date_whole_and_latest_unmoved(cloud, forced):
    """Someone dropped a column of the `snapshots` registry behind the job's
    back. The next run builds its snapshot and writes its manifest; publishing
    to BigQuery then fails: exit 1, every row of every table as it was, LATEST
    unmoved, no staging table left; the new snapshot stays in the bucket,
    unpublished.

    Where it fails: on BigQuery the contract check before loading sees the
    drifted schema. The emulator does not update table metadata on ALTER TABLE,
    so here the staging loads succeed and the one publish transaction fails at
    its last statements (the registry insert, after the three tables' delete
    and insert): none of it may remain.
    """
    before = {name: cloud.table_rows(name) for name in TABLES}
    latest, manifests = cloud.latest(), cloud.manifests()
    table = f"`{cloud.project}.{cloud.dataset}.snapshots`"
    cloud.bq().query(f"ALTER TABLE {table} DROP COLUMN code_version").result()
    try:
        code, out, err = oasis(*cloud.args(DAY, "--force"))
        assert code == 1, err[-3000:]
        assert "oasis run: error:" in err and "the warehouse is unchanged" in err
        # on the emulator the transaction is what fails (the refusal of a drifted table
        # before loading is reached in test_warehouse_bigquery.py)
        assert "rolled back" in err and "does not match the contract" not in err
        assert "LATEST" not in out
        after = {name: cloud.table_rows(name) for name in TABLES}
        before["snapshots"] = [{k: v for k, v in r.items() if k != "code_version"} for r in before["snapshots"]]
        for name in TABLES:
            assert after[name] == before[name], name
        assert not [t.table_id for t in cloud.bq().list_tables(f"{cloud.project}.{cloud.dataset}")
                    if t.table_id.startswith("_staging_")]
        assert cloud.latest() == latest
        unpublished = new_manifest(cloud, manifests)
        assert unpublished["score_date"] == SD.isoformat()
        assert not cloud.latest().endswith(unpublished["snapshot_id"])
    finally:
        cloud.bq().query(f"ALTER TABLE {table} ADD COLUMN code_version STRING").result()


@pytest.mark.parametrize("uri, problem", [
    ("bq://proj.bad-name;drop", "invalid project id 'proj'"),
    ("bq://test-project.bad-name;drop", "invalid dataset name 'bad-name;drop'"),
    ("bq://test-project.x` WHERE 1; DROP SCHEMA y; --", "invalid dataset name"),
])
def test_bad_warehouse_names_fail_before_any_request(cloud, uri, problem):
    datasets = sorted(d.dataset_id for d in cloud.bq().list_datasets())
    out = f"gs://{cloud.bucket}/bad-name-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    code, stdout, err = oasis("--date", DAY.isoformat(), "--input", cloud.input, "--output", out,
                              "--warehouse", uri)
    assert code == 1
    assert f"oasis run: error: {problem}" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 5  # no pipeline, no planning
    # nothing written but the failed run's own record and metrics (jobs.observe), which name the problem
    written = storage.list_files(out)
    assert [f.rsplit("/", 2)[-2] for f in written] == ["metrics", "runs"], written
    record = json.loads(storage.read_bytes(written[1]))
    assert record["status"] == "failed" and problem in record["reason"]
    assert sorted(d.dataset_id for d in cloud.bq().list_datasets()) == datasets


def test_beam_gcs_reaches_the_emulator_at_once(cloud):
    """`storage.use_emulator_for_beam()` (called by `oasis run`) makes Beam's own
    GCS filesystem anonymous: no ~25 s credentials probe. In a fresh process, as
    a worker or the CLI would be."""
    uri = f"gs://{cloud.bucket}/beam-probe/x.txt"
    code = f"""
import time
from pipelines import storage
assert storage.use_emulator_for_beam()
from apache_beam.io.filesystems import FileSystems
t0 = time.monotonic()
with FileSystems.create({uri!r}) as f:
    f.write(b"written by Beam")
assert FileSystems.open({uri!r}).read() == b"written by Beam"
print(time.monotonic() - t0)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 10
    assert "Unable to find default credentials" not in proc.stderr
    assert storage.read_bytes(uri) == b"written by Beam"  # it went to the emulator's bucket


def test_use_emulator_for_beam_is_a_no_op_without_the_emulator(monkeypatch):
    from apache_beam.internal.gcp import auth

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    assert storage.use_emulator_for_beam() is False
    assert auth._Credentials._credentials_init is False
