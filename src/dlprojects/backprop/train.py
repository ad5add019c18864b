"""Stage train_backprop@<mlp|cnn>: the NumPy-only network on MNIST, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from dlprojects.backprop import network, numpy_nn
from dlprojects.core import tracking
from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.errors import UserError, run_main
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint


def main() -> None:
    args = _parse_args()
    params = load_section("train_backprop")
    resolved = network.resolved_params(params, args.kind)

    splits = load_image_splits("mnist", args.data, **dataclasses.asdict(params.data))
    rng = np.random.default_rng(params.seed)  # initialisation, dropout masks and batch order
    model = network.build(resolved, rng)

    checkpoint = Checkpoint.of(f"backprop-{args.kind}", resolved)
    with (tracking.start_run("backprop", resolved, inputs=[args.data.as_posix()],
                             device="cpu (numpy)", checkpoint=checkpoint),
          threadpool_limits(params.threads)):
        try:
            result = numpy_nn.fit(
                model, train_images=network.as_inputs(args.kind, splits.train_images),
                train_labels=splits.train_labels,
                val_images=network.as_inputs(args.kind, splits.val_images),
                val_labels=splits.val_labels, rng=rng, on_epoch=tracking.log_epoch,
                on_history=history_writer(args.history), checkpoint=checkpoint,
                **dataclasses.asdict(getattr(params, args.kind).training))
        except numpy_nn.TrainingDiverged as error:
            raise UserError(f"{error} (train_backprop.{args.kind}.training.lr)") from None
        network.save(model, resolved, args.model_dir)
        tracking.log_training(result, args.model_dir, args.history,
                              artifacts=(args.model_dir / "weights.npz",))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["mlp", "cnn"])
    parser.add_argument("data", type=Path, help="data/raw/mnist")
    parser.add_argument("model_dir", type=Path, help="models/backprop/<kind>")
    parser.add_argument("history", type=Path, help="reports/backprop/<kind>/history.csv")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main)
