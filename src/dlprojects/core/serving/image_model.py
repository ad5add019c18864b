"""The logged image models' code (MLflow "models from code": nothing is unpickled to load them)."""

from mlflow.models import set_model

from dlprojects.core.serving.images import ImageClassifier

set_model(ImageClassifier())
