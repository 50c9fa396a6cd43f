"""Scoring one market: signals, listener estimates, campaigns and floors (pure numpy)."""
