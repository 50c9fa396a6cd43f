"""The `oasis` command line: one module per command; nothing outside this package imports it."""
