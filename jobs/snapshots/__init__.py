"""Published snapshots: the store (write, read, verify) and their administration."""
