"""torch models of the pipeline."""
