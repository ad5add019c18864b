"""FashionMNIST: the dense 256-128-64 classifier with batch norm and dropout against a baseline
(stages `train_fashion@<variant>`, `evaluate_fashion`)."""
