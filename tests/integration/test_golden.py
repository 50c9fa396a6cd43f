"""Golden outputs of a fixed tiny world: the run summary, one manifest (volatile
fields masked) and the `oasis explain` text of one eligible track. A change to
any of them is a visible diff in `tests/golden/`; after checking it is intended,
regenerate with `OASIS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_golden.py`.

Masked: snapshot ids, temporary paths, creation times, seconds, the code
version and what depends on it (run fingerprint), and the Parquet files' bytes
and sha256 (the writer stamps its version into them). Kept: every count, every
computed number, content fingerprints, gate results and config."""
from __future__ import annotations

import io
import json
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from jobs.cli import main as cli
from tests.support import worlds

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("OASIS_UPDATE_GOLDEN") == "1"
DAY = worlds.END.isoformat()
SCORE_DATE = "2026-11-25"


def oasis(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def mask(text: str, tmp: str, snapshot_id: str) -> str:
    text = text.replace(tmp, "<TMP>").replace(snapshot_id, "<SNAPSHOT_ID>")
    text = re.sub(r"\(logs up to (\S+), [0-9.]+ s\)", r"(logs up to \1, <SECONDS> s)", text)
    return text


def mask_manifest(doc: dict, tmp: str) -> dict:
    doc = json.loads(json.dumps(doc).replace(tmp, "<TMP>").replace(doc["snapshot_id"], "<SNAPSHOT_ID>"))
    for key in ("created_at", "code_version", "run_fingerprint"):
        doc[key] = f"<{key.upper()}>"
    doc["seconds"] = {k: "<SECONDS>" for k in doc["seconds"]}
    for table in doc["tables"].values():
        for f in table["files"]:
            f["bytes"], f["sha256"] = "<BYTES>", "<SHA256>"
    if doc.get("report"):
        doc["report"] = {k: ("<MASKED>" if k in ("bytes", "sha256") else v) for k, v in doc["report"].items()}
    return doc


def check(name: str, got: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(got)
    assert path.exists(), f"{path} is missing: run with OASIS_UPDATE_GOLDEN=1 once"
    assert got == path.read_text(), f"{name} differs from its golden copy (see the module docstring)"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("golden"))
    world = worlds.make_world(os.path.join(tmp, "world"), days=8, tracks=60, events_per_day=5000, markets=2,
                              seed=23)
    config = os.path.join(tmp, "golden.toml")
    with open(config, "w") as f:
        f.write("gate_min_eligible_share = 0.0\n")
    out = os.path.join(tmp, "out")
    summary = oasis("run", "--date", DAY, "--input", world, "--output", out, "--config", config)
    (snap,) = worlds.snapshot_dirs(out)
    return tmp, out, snap, worlds.manifest(snap), summary


def test_run_summary(published):
    tmp, _, _, m, summary = published
    check("run_summary.txt", mask(summary, tmp, m["snapshot_id"]))


def test_manifest(published):
    tmp, _, _, m, _ = published
    check("manifest.json", json.dumps(mask_manifest(m, tmp), indent=2, sort_keys=True) + "\n")


def test_explain_text(published):
    tmp, out, snap, m, _ = published
    scores = worlds.table(snap, "promotion_scores")
    row = scores[scores["eligible"]].sort_values(["track_id", "market", "surface"]).iloc[0]
    text = oasis("explain", "--date", SCORE_DATE, "--track", row["track_id"], "--market", row["market"],
                 "--output", out)
    check("explain.txt", mask(text, tmp, m["snapshot_id"]))
