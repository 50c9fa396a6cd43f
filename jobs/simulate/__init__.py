"""Simulated worlds with a planted truth: `lift_world` (campaigns, the holdout,
exposures and incremental plays from a planted lift per campaign) and
`lift_days` (its day generator, writing input files)."""
