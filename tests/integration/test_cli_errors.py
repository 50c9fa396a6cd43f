"""Every command fails the same way: one line `oasis <command>: error: <message>`
on stderr, exit 1 for a failure and 2 for a usage error, never a traceback.
And `oasis run` and `oasis backfill` of one date with default options are the
same run: same content fingerprints, same recorded method."""
from __future__ import annotations

import io
import os
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest

from jobs.cli import main as cli
from tests.support import worlds

DAY = worlds.END.isoformat()


def oasis(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def error_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{command}: error: ")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return worlds.make_world(str(tmp_path_factory.mktemp("cli") / "world"), days=3, tracks=30,
                             events_per_day=1500, markets=1)


@pytest.mark.parametrize("command, args, code", [
    ("oasis run", ["run", "--date", "2026-01-01", "--input", "{world}", "--output", "{out}"], 1),
    ("oasis run", ["run", "--date", DAY, "--input", "{world}", "--output", "{out}", "--config", "{out}/none.toml"], 1),
    ("oasis run", ["run", "--date", DAY, "--input", "{world}", "--output", "{out}", "--warehouse", "postgres://x"], 1),
    ("oasis backfill", ["backfill", "--start", "2026-01-02", "--end", "2026-01-01", "--input", "{world}",
                        "--output", "{out}"], 2),
    ("oasis backfill", ["backfill", "--start", "2026-01-01", "--end", "2026-01-01", "--input", "{world}",
                        "--output", "{out}"], 1),
    ("oasis snapshots show", ["snapshots", "show", "nope", "--output", "{out}"], 1),
    ("oasis snapshots rollback", ["snapshots", "rollback", "--to", "nope", "--output", "{out}"], 1),
    ("oasis explain", ["explain", "--date", DAY, "--track", "t", "--market", "US", "--output", "{out}"], 1),
    ("oasis validate", ["validate", "--date", "2026-01-01", "--input", "{world}"], 1),
    ("oasis sample", ["sample", "--out", "{out}/w", "--days", "0"], 2),
    ("oasis simulate", ["simulate", "--out", "{out}/s", "--days", "2", "--markets", "30"], 2),
])
def test_a_failure_is_one_line_in_one_format_with_the_documented_code(world, tmp_path, command, args, code):
    args = [a.format(world=world, out=str(tmp_path)) for a in args]
    got, _, err = oasis(*args)
    assert got == code, err
    assert len(error_lines(err, command)) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [
    ["snapshots", "gc", "--keep", "-1", "--output", "x"],
    ["run", "--date", "2026-13-01", "--input", "i", "--output", "o"],
    ["--log-level", "verbose", "config"],
    ["explain", "--date", DAY, "--track", "t", "--market", "US", "--output", "o", "--surface", "tv"],
])
def test_a_bad_argument_is_a_usage_error(args):
    code, _, err = oasis(*args)
    assert code == 2 and ": error: " in err.splitlines()[-1] and "Traceback" not in err


def test_run_and_backfill_of_one_date_are_the_same_run(world, tmp_path):
    a, b = str(tmp_path / "run"), str(tmp_path / "backfill")
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("gate_min_eligible_share = 0.0\n")  # a 3-day world has few eligible rows
    code, _, err = oasis("run", "--date", DAY, "--input", world, "--output", a, "--config", str(lenient))
    assert code == 0, err
    code, _, err = oasis("backfill", "--start", DAY, "--end", DAY, "--input", world, "--output", b,
                         "--config", str(lenient))
    assert code == 0, err
    (ma,), (mb,) = ([worlds.manifest(d) for d in worlds.snapshot_dirs(out)] for out in (a, b))
    assert ma["options"] == mb["options"] and ma["options"]["method"] == "auto"
    assert ma["run_fingerprint"] == mb["run_fingerprint"]
    assert {t: m["content_sha256"] for t, m in ma["tables"].items()} == \
        {t: m["content_sha256"] for t, m in mb["tables"].items()}
    # the method is part of the fingerprint: another method is another run
    code, out, err = oasis("run", "--date", DAY, "--input", world, "--output", a, "--config", str(lenient),
                           "--method", "exact")
    assert code == 0, err
    assert "already published" not in out and len(worlds.snapshot_dirs(a)) == 2
    methods = sorted(worlds.manifest(d)["options"]["method"] for d in worlds.snapshot_dirs(a))
    assert methods == ["auto", "exact"]
    assert re.search(r"OASIS snapshot \S+  score date ", out) and os.path.isdir(a)
