"""The allocation LP per (market, surface): the problem, its exact and dual solvers, verification."""
