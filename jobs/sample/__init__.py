"""The synthetic sample world, with its planted truth (`oasis sample`)."""
