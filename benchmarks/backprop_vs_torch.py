"""One MLP training epoch on MNIST-sized data: the NumPy network against the same network in torch.

Same architecture (the train_backprop.mlp params), batch size, optimiser (SGD with momentum), float32
and thread count, in one run; prints the median epoch seconds of each and the ratio, and the NumPy
network's matrix-product FLOP/s against NumPy's own sgemm peak at the same thread count.

    python benchmarks/backprop_vs_torch.py --epochs 3 --threads 1
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics, as the stages run them

import argparse
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from dlprojects.backprop import numpy_nn
from dlprojects.core.config import load_section


def numpy_epoch(model, optimizer, loss_fn, images, labels, batch_size, rng) -> float:
    started = time.perf_counter()
    order = rng.permutation(len(images))
    model.train()
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        loss_fn.forward(model.forward(images[batch]), labels[batch])
        model.backward(loss_fn.backward())
        optimizer.step()
    return time.perf_counter() - started


def torch_epoch(model, optimizer, images, labels, batch_size, generator) -> float:
    started = time.perf_counter()
    order = torch.randperm(len(images), generator=generator)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        loss = loss_fn(model(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def training_flops(sizes: list[int]) -> int:
    """Matrix-product FLOPs of one sample's forward and backward pass: the forward product, the
    weight gradient and the input gradient of every layer (none for the first: the images need
    no gradient)."""
    products = [2 * fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 3 * sum(products) - products[0]


def sgemm_peak(repeats: int = 5, n: int = 2048) -> float:
    """FLOP/s of NumPy's float32 matrix product at its best (n x n by n x n, best of `repeats`),
    under the thread limit in force."""
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    out = np.empty_like(a)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.matmul(a, b, out=out)
        seconds.append(time.perf_counter() - started)
    return 2 * n ** 3 / min(seconds)


def products_alone(sizes: list[int], batch_size: int, repeats: int = 200) -> float:
    """FLOP/s of one training step's matrix products alone, at the network's shapes (median of
    `repeats` steps): the ceiling of the whole step's share of the peak, reached only if the
    rest of the step (batch norm, dropout, the activations, the loss and the optimiser) took no
    time."""
    rng = np.random.default_rng(0)
    weights = [rng.random((fan_in, fan_out), dtype=np.float32)
               for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    inputs = [rng.random((batch_size, fan_in), dtype=np.float32) for fan_in in sizes[:-1]]
    grads = [rng.random((batch_size, fan_out), dtype=np.float32) for fan_out in sizes[1:]]
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for layer, (x, w, g) in enumerate(zip(inputs, weights, grads)):
            _ = x @ w  # forward
            _ = x.T @ g  # weight gradient
            if layer:
                _ = g @ w.T  # input gradient (none for the images)
        seconds.append(time.perf_counter() - started)
    return training_flops(sizes) * batch_size / statistics.median(seconds)


def torch_mlp(sizes, batch_norm, dropout) -> nn.Sequential:
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.BatchNorm1d(fan_out)] if batch_norm else [])
        layers += [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=55_000)
    args = parser.parse_args()
    params = load_section("train_backprop").mlp
    sizes = [784, *params.hidden, 10]
    batch_size, lr, momentum = params.training.batch_size, params.training.lr, params.training.momentum
    rng = np.random.default_rng(0)
    images = rng.random((args.samples, 784), dtype=np.float32)
    labels = rng.integers(0, 10, args.samples)

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        model = numpy_nn.build_mlp(sizes, activation=params.activation, dropout=params.dropout,
                                   batch_norm=params.batch_norm, rng=rng)
        optimizer = numpy_nn.SGD(model.parameters(), lr=lr, momentum=momentum)
        loss_fn = numpy_nn.SoftmaxCrossEntropy()
        numpy_times = [numpy_epoch(model, optimizer, loss_fn, images, labels, batch_size, rng)
                       for _ in range(args.epochs)]
        reference = torch_mlp(sizes, params.batch_norm, params.dropout)
        torch_optimizer = torch.optim.SGD(reference.parameters(), lr=lr, momentum=momentum)
        generator = torch.Generator().manual_seed(0)
        torch_images, torch_labels = torch.from_numpy(images), torch.from_numpy(labels)
        torch_times = [torch_epoch(reference, torch_optimizer, torch_images, torch_labels,
                                   batch_size, generator) for _ in range(args.epochs)]
        peak = sgemm_peak()
        ceiling = products_alone(sizes, batch_size)
    numpy_median, torch_median = statistics.median(numpy_times), statistics.median(torch_times)
    print(f"MLP {'-'.join(map(str, sizes))}, batch {batch_size}, {args.samples} samples, "
          f"{args.threads} thread(s), median of {args.epochs} epochs")
    print(f"numpy_nn: {numpy_median:.2f} s/epoch ({args.samples / numpy_median:,.0f} samples/s)")
    print(f"torch:    {torch_median:.2f} s/epoch ({args.samples / torch_median:,.0f} samples/s)")
    print(f"ratio numpy/torch: {numpy_median / torch_median:.2f}")
    achieved = training_flops(sizes) * args.samples / numpy_median
    print(f"numpy_nn: {achieved / 1e9:.1f} GFLOP/s in matrix products, "
          f"{100 * achieved / peak:.0f}% of NumPy's sgemm peak here ({peak / 1e9:.1f} GFLOP/s, "
          f"2048x2048, {args.threads} thread(s))")
    print(f"its products alone, at the step's shapes: {ceiling / 1e9:.1f} GFLOP/s, "
          f"{100 * ceiling / peak:.0f}% of the peak (the whole step's ceiling)")


if __name__ == "__main__":
    main()
