"""The Beam side: the daily pipeline's wiring, its composites, I/O and the Arrow table coder."""
