"""Backprop from scratch: the `numpy_nn` MLP and CNN on MNIST (stages `train_backprop@<kind>`,
`evaluate_backprop@<kind>`). `network` builds, saves and loads them from what their model folder
records; `dlprojects.core.serving` serves them through MLflow."""
