"""dlprojects: a reproducible deep-learning pipeline (DVC stages, MLflow tracking, four models)."""

__version__ = "0.1.0"
