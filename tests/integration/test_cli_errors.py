"""Every command fails the same way: one line `oasis <command>: error: <message>`
on stderr, exit 1 for a failure and 2 for a usage error, never a traceback.
And `oasis run` and `oasis backfill` of one date with default options are the
same run: same content fingerprints, same recorded method."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from jobs.cli import main as cli
from tests.support import worlds

ROOT = Path(__file__).resolve().parents[2]

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


# ------------------------------------------------- mistakes caught early ---
@pytest.mark.parametrize("command", ["run", "backfill"])
def test_a_typo_in_a_flag_fails_before_any_work_with_a_suggestion(world, tmp_path, command):
    """`--froce` used to go to Beam, which logged "Unparseable argument" and ran
    unforced (or printed "nothing to do" and exited 0 on a published date)."""
    dates = ["--date", DAY] if command == "run" else ["--start", DAY, "--end", DAY]
    out = str(tmp_path / "out")
    code, _, err = oasis(command, *dates, "--input", world, "--output", out, "--froce")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"oasis {command}: error: unknown option --froce (did you mean --force?): it is "
                                    f"neither an option of `oasis {command}` nor an Apache Beam pipeline option "
                                    "(`--help` lists the command's options)")
    assert not os.path.exists(out)
    code, _, err = oasis(command, *dates, "--input", world, "--output", out, "--skip_gate", "row_count")
    assert code == 2 and "did you mean --skip-gate?" in err
    code, _, err = oasis(command, *dates, "--input", world, "--output", out, "stray")
    assert code == 2 and "unexpected argument 'stray'" in err
    code, _, err = oasis(command, *dates, "--input", world, "--output", out, "--runner=NoSuchRunner", "--setup_fil",
                         "x")
    assert code == 2 and "unknown option --setup_fil (did you mean --setup_file?)" in err
    assert not os.path.exists(out)


def test_beam_options_still_pass_through(world, tmp_path):
    """Real Beam options are accepted (and recorded) as before."""
    out = str(tmp_path / "out")
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("gate_min_eligible_share = 0.0\n")
    code, _, err = oasis("run", "--date", DAY, "--input", world, "--output", out, "--config", str(lenient),
                         "--direct_num_workers", "1", "--runner=DirectRunner")
    assert code == 0, err
    (snap,) = worlds.snapshot_dirs(out)
    assert worlds.manifest(snap)["beam_options"] == ["--direct_num_workers", "1", "--runner=DirectRunner"]


def test_global_flags_work_after_the_command_too(world, capsys):
    """`oasis validate ... --log-format json` used to be ignored; now it is the
    same as `oasis --log-format json validate ...`, and every stderr line is
    then JSON, the error line included."""
    for args in (["--log-format", "json", "validate", "--date", "2026-01-01", "--input", world],
                 ["validate", "--date", "2026-01-01", "--input", world, "--log-format", "json"]):
        code, _, err = oasis(*args)
        assert code == 1
        records = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
        last = records[-1]
        assert last["level"] == "ERROR" and last["logger"] == "oasis.cli"
        assert last["message"].startswith("oasis validate: error: a run of logs date 2026-01-01")
    # a usage error in JSON mode is a JSON record too
    code, _, err = oasis("validate", "--date", "2026-13-01", "--input", world, "--log-format=json")
    assert code == 2 and json.loads(err.strip())["message"].startswith("oasis validate: error: argument --date")
    code, _, err = oasis("validate", "--date", DAY, "--input", world, "--log-level", "verbose")
    assert code == 2 and "invalid choice: 'VERBOSE'" in err and "Traceback" not in err
    # a value given before the command is not undone by the default after it
    code, _, err = oasis("--log-format", "json", "validate", "--date", DAY, "--input", world)
    assert code == 0 and all(line.startswith("{") for line in err.splitlines())


def test_no_help_shows_a_default_of_none():
    """Required arguments and flags without a default never print "(default: None)"."""
    texts = []
    root = cli.parser()
    for p in [root] + cli.a.leaf_parsers(root):
        texts.append(p.format_help())
    assert len(texts) >= 10 and not any("default: None" in t or "default None" in t for t in texts)


@pytest.mark.parametrize("args", [["config"], ["snapshots", "list", "--output", "/nonexistent/oasis-out"]])
def test_a_closed_pipe_is_not_a_traceback(args):
    """`oasis snapshots list | head`: the reader goes away before oasis writes; it
    used to end in a BrokenPipeError traceback. A long output breaks the pipe
    while printing, a short one only when stdout is flushed: both are covered."""
    p = subprocess.Popen([sys.executable, "-m", "jobs.cli.main", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=str(ROOT))
    p.stdout.close()  # before the interpreter has even imported Beam
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
