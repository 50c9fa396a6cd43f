"""What is computed: the Beam pipeline and the pure math it calls. Imports `schemas` only."""
