"""dlprojects: a reproducible deep-learning pipeline (DVC stages, MLflow tracking, four models).

Importing the package pins the CPU numerics (see `dlprojects.numerics`): stage scripts import it
before NumPy and torch.
"""

from dlprojects import numerics

__version__ = "0.1.0"

LOADED_BEFORE_PIN = numerics.pin()  # libraries that loaded first keep their own kernels
