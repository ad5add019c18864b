"""Lineage from the command line: `python -m dlprojects.lineage` (see `query`)."""
