"""The publish gates a would-be snapshot must pass, and quarantine when it does not."""
