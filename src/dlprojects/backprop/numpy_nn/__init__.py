"""Neural networks from scratch in NumPy: layers with hand-written backward passes, checked
against finite differences (gradcheck) and, in the tests, against torch autograd.

Imports NumPy (and, for checkpoints and the history contract, `dlprojects.core`) only. Typical
use:

    rng = np.random.default_rng(0)
    model = build_mlp([784, 512, 256, 10], dropout=0.2, batch_norm=True, rng=rng)
    result = fit(model, train_images=..., train_labels=..., val_images=..., val_labels=...,
                 epochs=12, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                 weight_decay=5e-4, schedule="cosine", rng=rng)
"""

from dlprojects.core.errors import TrainingDiverged

from .conv import Conv2d, MaxPool2d
from .gradcheck import check_layer, max_relative_error, numerical_gradient
from .init import he_normal, initial_weights, xavier_uniform
from .layers import BatchNorm1d, Dropout, Flatten, Layer, Linear, Parameter, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy, log_softmax, softmax
from .model import Sequential, save_npz
from .optim import SGD, Adam, learning_rate
from .train import build_cnn, build_mlp, evaluate, fit

__all__ = [
    "Adam", "BatchNorm1d", "Conv2d", "Dropout", "Flatten", "Layer", "Linear",
    "MaxPool2d", "Parameter", "ReLU", "SGD", "Sequential", "Sigmoid",
    "SoftmaxCrossEntropy", "Tanh", "TrainingDiverged", "build_cnn", "build_mlp", "check_layer",
    "evaluate", "fit", "he_normal", "initial_weights", "learning_rate", "log_softmax",
    "max_relative_error", "numerical_gradient", "save_npz", "softmax", "xavier_uniform",
]
