"""Privacy: no listener id, nor anything derived from one listener's id, leaves
the run except in the dead letters and the lift facts; no secret from the
environment or the Beam options lands in the manifest, the outputs, the logs,
the run records, the metrics or the lineage events.

The lift facts (OUT/aggregates/dt=D/build=ID/{listeners,exposures}/) must follow
a listener across days, so they carry a 64-bit listener key
(`pipelines.holdout.listener_keys`): never the id, nor an md5/sha digest of it,
and nowhere else: no snapshot table, warehouse table, report or log holds a
per-listener row.

One real `oasis --log-level DEBUG run` on a sample world, with a fake
GOOGLE_APPLICATION_CREDENTIALS file, fake secrets in the environment, and fake
secret Beam options (given as `--name value` and as `--name=value`); then the
same run on a world whose engagement rows break the contract far above the
ceiling (a failure whose message counts dead-lettered rows). Lineage events go
to a file (the client's file transport). An option Beam does not know (which
Beam would log with its value) is refused before any work, and the refusal
does not echo the value.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import holdout
from tests.support import worlds
from tests.support import invariants as inv

SECRETS = {
    "s3_secret": "FAKE-S3-SECRET-9c1f0e7d2b",
    "s3_token": "FAKE-S3-SESSION-TOKEN-5a4b3c",
    "unknown_token": "ya29.FAKE-OAUTH-TOKEN-77e1d0",
    "env_secret": "FAKE-ENV-SECRET-0d9e8f7a",
    "private_key": "FAKEPRIVATEKEYMATERIAL31415",
}
BEAM_SECRET_ARGS = ["--s3_secret_access_key", SECRETS["s3_secret"],
                    f"--s3_session_token={SECRETS['s3_token']}"]
UNKNOWN_SECRET_ARGS = [["--oauth_access_token", SECRETS["unknown_token"]],
                       [f"--oauth_access_token={SECRETS['unknown_token']}"]]
FORBIDDEN_COLUMN_WORDS = ("user", "listener_id", "uid")


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    world = worlds.make_world(str(root / "world"), days=4, tracks=60, events_per_day=3000, markets=2, holdout=True)
    creds = root / "fake-service-account-creds.json"
    creds.write_text(json.dumps({"type": "service_account", "private_key_id": "fake",
                                 "private_key": SECRETS["private_key"], "client_email": "x@example.invalid"}))
    out = str(root / "out")
    lineage = str(root / "lineage.ndjson")
    env = dict(GOOGLE_APPLICATION_CREDENTIALS=str(creds), AWS_SECRET_ACCESS_KEY=SECRETS["env_secret"],
               OPENLINEAGE__TRANSPORT__TYPE="file", OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=lineage,
               OPENLINEAGE__TRANSPORT__APPEND="true")
    proc = inv.run_cli("--log-level", "DEBUG", "run", "--date", worlds.END.isoformat(), "--input", world,
                       "--output", out, *BEAM_SECRET_ARGS, **env)
    # a failing run: a third of the logs date's events have an empty user id (dead-lettered; far above 1%)
    bad = worlds.copy_world(world, str(root / "bad-world"))
    (part,) = glob.glob(f"{bad}/engagement/dt={worlds.END.isoformat()}/*.parquet")
    t = pq.read_table(part)
    field = t.schema.field("user_id")
    emptied = ["" if i % 3 == 0 else u for i, u in enumerate(t.column("user_id").to_pylist())]
    t = t.set_column(t.schema.get_field_index("user_id"), field, pa.array(emptied, field.type))
    pq.write_table(t, part)
    failed = inv.run_cli("--log-level", "DEBUG", "run", "--date", worlds.END.isoformat(), "--input", bad,
                         "--output", out, *BEAM_SECRET_ARGS, **env)
    users = set()
    for f in glob.glob(f"{world}/engagement/*/*.parquet"):
        users |= {u for u in pq.read_table(f, columns=["user_id"]).column("user_id").to_pylist() if u}
    derived = set()
    for u in users:
        for h in (hashlib.md5, hashlib.sha1, hashlib.sha256):
            derived.add(h(u.encode()).hexdigest())
    keys = set(holdout.as_int64(holdout.listener_keys(pa.array(sorted(users)))).tolist())
    return dict(out=out, proc=proc, failed=failed, users=users, derived=derived, keys=keys, creds=str(creds),
                lineage=lineage)


LIFT_FACTS = ("listeners", "exposures")  # the folders of a build that may hold listener keys


def _in_lift_facts(out: str, path: str) -> bool:
    parts = os.path.relpath(path, out).split(os.sep)
    return parts[0] == "aggregates" and len(parts) >= 4 and parts[2].startswith("build=") and parts[3] in LIFT_FACTS


def _keys_in(path: str) -> set[int]:
    t = pq.read_table(path)
    found = set()
    for name in t.column_names:
        if pa.types.is_integer(t.schema.field(name).type):
            found |= set(t.column(name).to_pylist())
    return found


def _found(text: str, needles) -> list[str]:
    return sorted(n for n in needles if n and n in text)


def _table_text(t: pa.Table) -> str:
    parts = []
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
            parts.extend(str(v) for v in col.to_pylist() if v is not None)
        elif pa.types.is_list(col.type):
            parts.extend(json.dumps(v) for v in col.to_pylist() if v is not None)
    return "\n".join(parts)


def _leaks(path: str, users, derived) -> list[str]:
    """What of a listener a file shows: a user-like column, or a value holding a
    user id or a hash of one."""
    problems = []
    if path.endswith(".parquet"):
        t = pq.read_table(path)
        bad_cols = [c for c in t.column_names if any(w in c.lower() for w in FORBIDDEN_COLUMN_WORDS)]
        if bad_cols:
            problems.append(f"{path}: listener columns {bad_cols}")
        text = _table_text(t)
    elif path.endswith(".duckdb"):
        return []  # checked through SQL below
    else:
        text = open(path, "rb").read().decode("latin-1")
    hits = _found(text, users) + _found(text, derived)
    if hits:
        problems.append(f"{path}: {len(hits)} listener ids or hashes, e.g. {hits[:3]}")
    return problems


def test_the_run_published(privacy_run):
    assert privacy_run["proc"].returncode == 0, privacy_run["proc"].stderr[-3000:]
    assert privacy_run["users"]  # there are listener ids to look for


def test_no_listener_id_in_any_output_but_the_dead_letters(privacy_run):
    out, users, derived = privacy_run["out"], privacy_run["users"], privacy_run["derived"]
    keys = privacy_run["keys"]
    problems, scanned, facts_with_keys = [], 0, 0
    for dirpath, _, files in os.walk(out):
        if os.path.relpath(dirpath, out).split(os.sep)[0] == "dead_letters":
            continue
        for f in files:
            path = os.path.join(dirpath, f)
            problems += _leaks(path, users, derived)
            scanned += 1
            if path.endswith(".parquet"):
                found = _keys_in(path) & keys
                if _in_lift_facts(out, path):
                    facts_with_keys += bool(found)
                elif found:
                    problems.append(f"{path}: {len(found)} listener keys outside the lift facts")
    assert scanned > 10
    assert not problems, "\n".join(problems)
    assert facts_with_keys > 0  # the key detector does find the keys where they are kept

    # the detector does find listener ids where they are allowed (dead letters
    # keep the rejected rows whole), so the empty result above means something
    dead = glob.glob(f"{out}/dead_letters/*/*.parquet")
    assert dead and any(_leaks(f, users, derived) for f in dead)


def test_no_listener_id_in_the_warehouse(privacy_run):
    out, users, derived, keys = privacy_run["out"], privacy_run["users"], privacy_run["derived"], privacy_run["keys"]
    con = duckdb.connect(os.path.join(out, "warehouse.duckdb"), read_only=True)
    try:
        relations = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        assert {r[0] for r in relations} >= {"promotion_scores", "campaign_delivery", "capacity", "snapshots",
                                            "promotion_scores_latest"}
        problems = []
        for (name,) in relations:
            res = con.execute(f'SELECT * FROM "{name}"')
            t = res.to_arrow_table() if hasattr(res, "to_arrow_table") else res.fetch_arrow_table()
            cols = [c for c in t.column_names if any(w in c.lower() for w in FORBIDDEN_COLUMN_WORDS)]
            if cols:
                problems.append(f"warehouse {name}: listener columns {cols}")
            text = _table_text(t)
            hits = _found(text, users) + _found(text, derived)
            if hits:
                problems.append(f"warehouse {name}: listener ids {hits[:3]}")
            for col in t.column_names:
                if pa.types.is_integer(t.schema.field(col).type) and set(t.column(col).to_pylist()) & keys:
                    problems.append(f"warehouse {name}.{col}: listener keys")
        assert not problems, "\n".join(problems)
    finally:
        con.close()


def test_no_listener_id_or_secret_in_the_logs(privacy_run):
    proc = privacy_run["proc"]
    logs = proc.stdout + proc.stderr
    assert "DEBUG" in logs  # debug logging really was on
    assert not _found(logs, privacy_run["users"])
    assert not _found(logs, privacy_run["derived"])
    assert not _found(logs, SECRETS.values())
    assert privacy_run["creds"] not in logs


def test_no_secret_in_the_manifest_or_the_report(privacy_run):
    out = privacy_run["out"]
    (snap,) = worlds.snapshot_dirs(out)
    texts = {p: open(p, encoding="utf-8", errors="replace").read()
             for p in glob.glob(f"{snap}/*") if os.path.isfile(p)}
    assert os.path.join(snap, "_MANIFEST.json") in texts
    for path, text in texts.items():
        assert not _found(text, SECRETS.values()), path
        assert privacy_run["creds"] not in text, path
        assert not _found(text, privacy_run["users"]), path
    m = worlds.manifest(snap)
    # the options are recorded, their secret values are not
    opts = m["beam_options"]
    assert "--s3_secret_access_key" in opts
    assert all("<redacted>" in o or not o.startswith("--s3_session_token") for o in opts)


def test_no_listener_id_or_secret_in_run_records_metrics_or_lineage(privacy_run):
    """The observability outputs of a published and of a failed run: the run
    records, the metrics text file and every lineage event."""
    out, failed = privacy_run["out"], privacy_run["failed"]
    assert failed.returncode == 1 and "bad rows above the ceiling" in failed.stderr, failed.stderr[-2000:]
    records = {p: open(p, encoding="utf-8").read() for p in glob.glob(f"{out}/runs/*.json")}
    statuses = sorted(json.loads(t)["status"] for t in records.values())
    assert statuses == ["failed", "published"]
    texts = dict(records)
    texts[f"{out}/metrics/oasis.prom"] = open(f"{out}/metrics/oasis.prom", encoding="utf-8").read()
    events = open(privacy_run["lineage"], encoding="utf-8").read()
    assert [json.loads(line)["eventType"] for line in events.splitlines()] == ["START", "COMPLETE", "START", "FAIL"]
    texts[privacy_run["lineage"]] = events
    for path, text in texts.items():
        assert not _found(text, privacy_run["users"]), path
        assert not _found(text, privacy_run["derived"]), path
        assert not _found(text, SECRETS.values()), path
        assert privacy_run["creds"] not in text, path
        assert "s3_secret_access_key" not in text and "oauth_access_token" not in text, path  # no options at all


@pytest.mark.parametrize("unknown", UNKNOWN_SECRET_ARGS, ids=["separate", "joined"])
def test_an_unknown_secret_option_is_refused_without_echoing_its_value(privacy_run, tmp_path, unknown):
    out = str(tmp_path / "out")
    proc = inv.run_cli("run", "--date", worlds.END.isoformat(), "--input", "unused", "--output", out, *unknown)
    assert proc.returncode == 2
    assert "unknown option --oauth_access_token" in proc.stderr
    assert not _found(proc.stdout + proc.stderr, SECRETS.values())
    assert not os.path.exists(out)
