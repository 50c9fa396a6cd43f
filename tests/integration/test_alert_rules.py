"""The alerting rules shipped in ops/prometheus/ load in Prometheus' own
checker and behave as their unit tests say (promtool, from Debian's
`prometheus` package; see tests/support/prometheus.py)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import prometheus

RULES_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return prometheus.promtool()
    except prometheus.Unavailable as e:
        pytest.skip(str(e))


def run(promtool, *args, cwd=RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_rules_load_and_pass_their_unit_tests(promtool):
    checked = run(promtool, "check", "rules", "oasis_alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "5 rules found" in checked.stdout
    tested = run(promtool, "test", "rules", "oasis_alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_catch_a_changed_objective(promtool, tmp_path):
    """The rule tests are sharp: a late alert at 40 h instead of 30 h fails them."""
    for f in RULES_DIR.glob("*.yml"):
        shutil.copy(f, tmp_path / f.name)
    rules = tmp_path / "oasis_alerts.yml"
    text = rules.read_text()
    assert "> 30 * 3600" in text
    rules.write_text(text.replace("> 30 * 3600", "> 40 * 3600"))
    tested = run(promtool, "test", "rules", "oasis_alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "OasisSnapshotLate" in tested.stdout + tested.stderr


def test_the_operations_guide_shows_the_rules_as_shipped():
    """docs/operations.md quotes the rule file; a change to one without the other fails here."""
    doc = (RULES_DIR.parents[1] / "docs" / "operations.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```yaml\n")[1:]]
    assert (RULES_DIR / "oasis_alerts.yml").read_text() in blocks
