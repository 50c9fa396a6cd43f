"""When, where and how results are published: runs, snapshots, gates, warehouse, CLI. Side effects live here."""
