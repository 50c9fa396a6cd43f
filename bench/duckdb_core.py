"""The baseline: DuckDB doing the daily core on the same files.

The day's per (track, market, promotion surface) aggregate (plays, distinct
listeners, skips, saves, promoted plays, ms played) after removing repeated
event_ids, joined to the latest active enrollment rows, written to Parquet.
Run as a script so the benchmark can measure it in its own process.
"""
from __future__ import annotations

import sys

import duckdb

SQL = """
COPY (
  WITH events AS (
    SELECT DISTINCT ON (event_id) event_id, user_id, track_id, market, surface, skipped, saved, promoted, ms_played
    FROM read_parquet('{eng}/*.parquet')
    WHERE surface IN ('radio', 'autoplay', 'mixes')
  ),
  latest AS (
    SELECT * FROM read_parquet('{enr}/*.parquet')
    QUALIFY row_number() OVER (PARTITION BY campaign_id, track_id, market ORDER BY updated_at DESC) = 1
  ),
  live AS (SELECT DISTINCT track_id, market FROM latest WHERE status = 'active'),
  agg AS (
    SELECT track_id, market, surface, count(*) AS plays, count(DISTINCT user_id) AS listeners,
           sum(skipped::INT) AS skips, sum(saved::INT) AS saves, sum(promoted::INT) AS promoted_plays,
           sum(ms_played) AS ms_played
    FROM events GROUP BY ALL
  )
  SELECT agg.* FROM agg JOIN live USING (track_id, market)
) TO '{out}' (FORMAT parquet)
"""


def run(input_root: str, day: str, out: str) -> int:
    con = duckdb.connect()
    con.execute(SQL.format(eng=f"{input_root}/engagement/dt={day}", enr=f"{input_root}/enrollments/dt={day}",
                           out=out))
    return con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]


if __name__ == "__main__":
    print(run(*sys.argv[1:4]))
