"""What a run checks before its pipeline starts (`jobs.run.preflight`), so a
problem found in a second is not found after the whole pipeline (on Dataflow,
after a paid job). On the previous main each of these was found only at the
publish, after the pipeline: an output root that is a file, a BigQuery
warehouse without credentials; and a held warehouse file or publish lock made
the run wait in silence."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from jobs.snapshots import store
from tests.support import invariants as inv
from tests.support.lifecycle import oasis, two_snapshots


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return two_snapshots(tmp_path_factory)


def test_an_output_root_that_is_a_file_fails_at_once(two, tmp_path):
    f = tmp_path / "out"
    f.write_text("not a folder")
    t0 = time.monotonic()
    code, _, err = oasis("run", "--date", "2026-11-24", "--input", two.world, "--output", str(f))
    assert code == 1 and f"oasis run: error: the output root {f} cannot be written" in err and "is a file" in err
    assert "run 2026" not in err and "Traceback" not in err and time.monotonic() - t0 < 30


def test_a_bigquery_warehouse_without_credentials_fails_before_the_pipeline(two, tmp_path, monkeypatch):
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    out = str(tmp_path / "out")
    code, _, err = oasis("run", "--date", "2026-11-24", "--input", two.world, "--output", out,
                         "--warehouse", "bq://test-project.oasis")
    assert code == 1 and "oasis run: error: no Google credentials for bq://test-project.oasis" in err, err
    assert "run 2026" not in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(out, "snapshots"))


HOLDER = """
import sys, duckdb
from jobs.snapshots import store
lock = store.publish_lock(sys.argv[1]); lock.__enter__()
con = duckdb.connect(sys.argv[2], read_only=True)
print("holding", flush=True)
sys.stdin.readline()
"""


def test_a_held_warehouse_and_publish_lock_are_named_with_the_wait(two, tmp_path):
    """Another process holds the DuckDB file (an analyst's session) and the
    publish lock: the run says who holds each and how long its publish will
    wait, waits, and publishes once they are released."""
    out = two.copy(str(tmp_path / "out"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, out, os.path.join(out, "warehouse.duckdb")],
                              cwd=inv.ROOT, env=inv.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    log = tmp_path / "run.log"
    try:
        assert holder.stdout.readline().strip() == "holding"
        with open(log, "w") as fh:
            run = subprocess.Popen(inv.cli_args("run", "--date", "2026-11-22", "--input", two.world, "--output", out),
                                   cwd=inv.ROOT, env=inv.env(), stdout=subprocess.DEVNULL, stderr=fh)
        deadline = time.monotonic() + 300
        while "waiting for the publish lock" not in log.read_text() and run.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    pid = f"pid {holder.pid}"
    assert f"the warehouse {out}/warehouse.duckdb is open in {pid}" in text
    assert "the publish will wait up to 120 s for it to close" in text
    assert f"the publish lock of {out} is held by {pid}" in text
    assert f"this run's publish will wait up to {store.PUBLISH_LOCK_WAIT_S:.0f} s" in text
    assert f"waiting for the publish lock, held by {pid}" in text
