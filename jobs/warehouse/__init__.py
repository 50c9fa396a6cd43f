"""The warehouse: an interface and one module per backend (DuckDB, BigQuery)."""
