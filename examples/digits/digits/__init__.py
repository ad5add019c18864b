"""An example project: softmax regression on MNIST (README, "Add a project")."""
