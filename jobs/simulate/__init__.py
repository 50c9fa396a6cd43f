"""Simulated worlds with a planted truth: `oasis simulate`, a closed-loop world
in which each day's published plan drives the next day's plays
(`jobs.simulate.loop`); and `lift_world` (campaigns, the holdout, exposures
and incremental plays from a planted lift per campaign) with `lift_days` (its
day generator, writing input files)."""
