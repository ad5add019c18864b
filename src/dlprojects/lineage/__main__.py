"""`python -m dlprojects.lineage ...`: see `dlprojects.lineage.query`."""

from dlprojects.core.errors import run_main
from dlprojects.lineage.query import main

run_main(main)
