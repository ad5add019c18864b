"""The logged review models' code (MLflow "models from code": nothing is unpickled to load
it)."""

from mlflow.models import set_model

from dlprojects.core.serving.reviews import ReviewClassifier

set_model(ReviewClassifier())
