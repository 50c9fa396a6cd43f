"""docs/analysts.md documents every warehouse column, with its type, in schema
order, and its example queries are well formed (the emulator test runs them on
BigQuery and DuckDB)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas import (CAMPAIGN_DELIVERY, CAMPAIGN_LIFT, CAPACITY, DELIVERY_RECONCILIATION, FORECAST_ACCURACY, PRICES,
                     PROMOTION_SCORES, SNAPSHOTS)

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
BQ_TYPE = {"string": "STRING", "bool": "BOOL", "int64": "INT64", "double": "FLOAT64", "date": "DATE",
           "timestamp": "TIMESTAMP"}


def documented_columns(table: str) -> list[tuple[str, str]]:
    """(column, type) rows of the markdown table under the heading ### `table`."""
    text = DOC.read_text()
    section = text.split(f"### `{table}`\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows[1:]]  # skip the header
    return [(c[0], c[1]) for c in cells]


@pytest.mark.parametrize("table", [PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, PRICES, DELIVERY_RECONCILIATION,
                                   CAMPAIGN_LIFT, SNAPSHOTS, FORECAST_ACCURACY],
                         ids=lambda t: t.name)
def test_every_column_is_documented_with_its_type(table):
    want = [(f.name, BQ_TYPE[f.type] + (", null" if f.nullable else "")) for f in table.fields]
    assert documented_columns(table.name) == want


def test_example_queries_are_named_and_unqualified():
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    names = [re.match(r"-- name: ([a-z0-9_]+)\n", b).group(1) for b in blocks]
    assert len(names) == len(set(names)) >= 3
    for b in blocks:
        assert "`" not in b and not re.search(
            r"\b\w+\.\w*(promotion_scores|campaign_delivery|capacity|delivery_reconciliation|campaign_lift|"
            r"snapshots|forecast_accuracy)\b", b)
