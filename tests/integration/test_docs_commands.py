"""Every command and query the README and docs/*.md show runs, as shown, on
the sample world: a doc cannot drift from the behaviour again.

* Every ```sh block of README.md and docs/*.md is split into commands (a
  trailing backslash continues a line, `#` starts a comment) and each command
  is run with bash from a folder laid out like the repository root (`.venv`,
  the packages, `data/`), `oasis` on the PATH. Each must exit 0. A command that
  cannot run here is listed in NOT_RUN with the reason; any other command a
  doc adds is run. ```text blocks are synopses, not run.
* `SNAPSHOT_ID` in a command stands for the id LATEST points to.
* Every ```sql block of docs/analysts.md runs on the DuckDB warehouse the
  commands filled and must return rows (the emulator test runs the same
  blocks on BigQuery).

The world is the `make run` world (the Makefile's days, tracks and seed) with
fewer plays a day, so the whole walk takes a couple of minutes: the same
catalogue and dates, so the example track id and dates of the docs exist.
The README's Luigi RangeDaily command crosses the campaign month change
(score date 2026-11-01) and must exit 0.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from jobs.sample.generate import generate_world

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
EVENTS_PER_DAY = 6000  # the Makefile's world has 100,000; the catalogue, enrollments and dates do not depend on it

NOT_RUN = {
    "make run": "the set-up itself: this test lays out the same world and runs the same `oasis run`",
    "make test": "the test suite itself",
    ".venv/bin/oasis status --output data/out --max-age-hours 30 || page-the-on-call":
        "page-the-on-call stands for the operator's paging command, and the sample world's LATEST is days old, so "
        "status rightly says NOT OK; tests/integration/test_observe.py runs `oasis status` on fresh and late outputs",
}
NOT_RUN_PREFIXES = {
    "oasis run --date 2026-11-24 --input gs://BUCKET/oasis/in": "needs a Google Cloud project (Dataflow, a bucket, "
                                                               "BigQuery); tests/integration/test_dataflow_ready.py "
                                                               "builds the same job offline",
    "oasis serving sync --output gs://B/oasis": "needs a Google Cloud bucket and a serving host's folder; the "
                                               "local sync above is the same code",
}


def makefile_value(name: str) -> str:
    m = re.search(rf"^{name} \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"Makefile has no {name}"
    return m.group(1)


def commands(path: Path) -> list[str]:
    """The commands of every ```sh block of a markdown file, in order."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        pending = ""
        for line in joined.splitlines():
            if not pending and (not line.strip() or line.strip().startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line.strip()
            try:
                shlex.split(pending)
            except ValueError:  # an open quote: the command goes on (`python -c "..."` over lines)
                continue
            if "\n" not in pending:
                pending = re.sub(r"\s+#.*$", "", pending)
            out.append(pending)
            pending = ""
        assert not pending, f"{path.name}: unterminated command {pending!r}"
    return out


def sql_blocks(path: Path) -> list[tuple[str, str]]:
    return [(re.match(r"-- name: (\w+)", b).group(1), b)
            for b in re.findall(r"```sql\n(.*?)```", path.read_text(), re.S)]


def skip_reason(command: str) -> str | None:
    if command in NOT_RUN:
        return NOT_RUN[command]
    return next((why for prefix, why in NOT_RUN_PREFIXES.items() if command.startswith(prefix)), None)


def test_every_documented_command_is_run_or_says_why_not():
    """The parse finds the commands (a doc whose blocks stopped parsing would
    pass the walk below vacuously) and the NOT_RUN lists name only commands
    that exist."""
    found = {d.name: commands(d) for d in DOCS}
    assert len(found["README.md"]) >= 6 and len(found["operations.md"]) >= 8
    every = [c for cs in found.values() for c in cs]
    assert set(NOT_RUN) <= set(every)
    assert all(any(c.startswith(p) for c in every) for p in NOT_RUN_PREFIXES)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A folder laid out like the repository root after `make run`."""
    here = tmp_path_factory.mktemp("repo")
    for name in (".venv", "jobs", "pipelines", "schemas", "setup.py"):
        os.symlink(ROOT / name, here / name)
    world = here / "data" / "world"
    generate_world(str(world), days=int(makefile_value("SAMPLE_DAYS")), tracks=int(makefile_value("SAMPLE_TRACKS")),
                   events_per_day=EVENTS_PER_DAY, seed=7, end_date=dt.date(2026, 11, 24), progress=False)
    code, out = sh(here, "oasis run --date $(cat data/world/LAST_DAY) --input data/world --output data/out")
    assert code == 0, out
    return here


def sh(cwd: Path, command: str) -> tuple[int, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT))
    p = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    return p.returncode, p.stdout + p.stderr


def latest_id(repo: Path) -> str:
    return (repo / "data" / "out" / "snapshots" / "LATEST").read_text().strip().split("/")[-1]


def test_the_docs_commands_run_on_the_sample_world(repo):
    ran = {}
    for doc in DOCS:
        for command in commands(doc):
            if skip_reason(command):
                continue
            real = command.replace("SNAPSHOT_ID", latest_id(repo))
            code, out = sh(repo, real)
            assert code == 0, f"{doc.name}: `{command}` exited {code}:\n{out[-4000:]}"
            assert "Traceback" not in out, f"{doc.name}: `{command}`:\n{out[-4000:]}"
            ran[command] = out
    assert len(ran) >= 12
    # what some of them must show
    explained = [out for c, out in ran.items() if c.startswith("oasis explain") and "trk-781be3a4ebd1" in c]
    assert explained and all("Why track trk-781be3a4ebd1 in US" in out for out in explained)
    (luigi_range,) = [out for c, out in ran.items() if "RangeDaily" in c]
    assert "This progress looks :)" in luigi_range
    published = {p.parent.parent.name for p in (repo / "data" / "out" / "snapshots").glob("*/*/_MANIFEST.json")}
    # the Luigi range: score dates 2026-11-19 .. 2026-11-21, all published
    assert {f"score_date=2026-{d}" for d in ("11-19", "11-20", "11-21")} <= published
    (validated,) = [out for c, out in ran.items() if c == "oasis validate --date 2026-11-24 --input data/world"]
    assert "A RUN WOULD PROCEED" in validated or "VALID" in validated


# Queries that run here but find no row in this walk's outputs, and where they are checked on rows.
EMPTY_HERE = {
    "delivery_by_campaign": "the walk publishes 2026-11-24 first, then backfills the days before it, so no "
                            "day's plan was published before its logs were reconciled; test_gcs_bigquery_run's "
                            "forced rerun reconciles a plan and runs every query there",
    **{q: "no flight has 10 days of logs with a holdout in this short world; "
          "test_warehouse_bigquery.py::test_same_answers_as_duckdb runs them on rows"
       for q in ("lift_by_campaign", "lift_by_licensor", "lift_by_artist_size", "lift_history_of_a_campaign")},
}


# Queries of tables this walk does not write, and where they are run.
NOT_HERE = {
    "forecast_accuracy_by_cohort": "forecast_accuracy is written by `oasis backtest`, which the walk does not run; "
                                   "test_gcs_bigquery_run runs every query after a backtest, on BigQuery and DuckDB",
}


def test_the_analysts_queries_return_rows_on_the_sample_world(repo):
    con = duckdb.connect(str(repo / "data" / "out" / "warehouse.duckdb"), read_only=True)
    try:
        blocks = sql_blocks(ROOT / "docs" / "analysts.md")
        assert len(blocks) >= 5 and set(EMPTY_HERE) | set(NOT_HERE) <= {name for name, _ in blocks}
        empty = {name for name, sql in blocks if name not in NOT_HERE and not con.sql(sql).fetchall()}
    finally:
        con.close()
    assert empty <= set(EMPTY_HERE), f"analysts.md queries return no row on the sample world: {sorted(empty)}"


def test_the_example_track_is_enrolled_in_us_in_the_sample_world(repo):
    """The docs' example id exists where they say (the `make run` world shares
    this world's catalogue and enrollments)."""
    con = duckdb.connect(str(repo / "data" / "out" / "warehouse.duckdb"), read_only=True)
    try:
        n = con.execute("SELECT count(*) FROM promotion_scores WHERE track_id = 'trk-781be3a4ebd1' AND market = 'US' "
                        "AND score_date = DATE '2026-11-25'").fetchone()[0]
    finally:
        con.close()
    assert n == 3
    for doc in DOCS:
        for track in re.findall(r"trk-[0-9a-f]{12}", doc.read_text()):
            assert track == "trk-781be3a4ebd1", f"{doc.name} names {track}, which this test does not check"


def test_make_run_asks_sample_for_its_world_every_time():
    """`make run` used to skip `oasis sample` when a `.complete` marker existed,
    so a world another command had replaced (2 days instead of 35) went on
    being used. Now it always calls `oasis sample` with its arguments, which
    reuses the same world, intact, and refuses any other one."""
    text = (ROOT / "Makefile").read_text()
    run = text.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert ".complete" not in text
    assert "oasis sample --out $(DATA)/world --days $(SAMPLE_DAYS) --tracks $(SAMPLE_TRACKS)" in run
    assert "--events-per-day $(SAMPLE_EVENTS) --seed 7" in run and "--overwrite" not in run
