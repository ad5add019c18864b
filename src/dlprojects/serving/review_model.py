"""The logged sentiment model's code (MLflow "models from code": nothing is unpickled to load
it)."""

from mlflow.models import set_model

from dlprojects.serving.reviews import ReviewClassifier

set_model(ReviewClassifier())
