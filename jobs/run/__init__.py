"""A run: its options, plan, fingerprint, phases, the one publish path, backfill."""
