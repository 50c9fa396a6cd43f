"""Observability: run records, OpenLineage events, Prometheus metrics (see `jobs.observe.hook`)."""
