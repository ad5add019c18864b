"""Stage train_backprop@<mlp|cnn>: the NumPy-only network on MNIST, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from dlprojects import numpy_nn, tracking
from dlprojects.config import load_section
from dlprojects.data.images import load_image_splits
from dlprojects.errors import UserError, run_main
from dlprojects.training import fingerprint, write_history


def build(kind: str, params, rng: np.random.Generator) -> numpy_nn.Sequential:
    """The network for `kind` from the train_backprop params (also used by evaluate_backprop)."""
    if kind == "mlp":
        return numpy_nn.build_mlp([28 * 28, *params.mlp.hidden, 10], activation=params.mlp.activation,
                                  dropout=params.mlp.dropout, batch_norm=params.mlp.batch_norm, rng=rng)
    return numpy_nn.build_cnn(channels=params.cnn.channels, hidden=params.cnn.hidden,
                              dropout=params.cnn.dropout, rng=rng)


def as_inputs(kind: str, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1]: (N, 784) for the MLP, (N, 1, 28, 28) for the CNN."""
    pixels = images.astype(np.float32) / 255.0
    return pixels.reshape(len(images), -1) if kind == "mlp" else pixels[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["mlp", "cnn"])
    parser.add_argument("data", type=Path, help="data/raw/mnist")
    parser.add_argument("model_dir", type=Path, help="models/backprop/<kind>")
    parser.add_argument("history", type=Path, help="reports/backprop/<kind>/history.csv")
    args = parser.parse_args()
    params = load_section("train_backprop")
    network = getattr(params, args.kind)
    splits = load_image_splits("mnist", args.data, **dataclasses.asdict(params.data))
    rng = np.random.default_rng(params.seed)
    model = build(args.kind, params, rng)
    history = []

    def on_epoch(epoch, metrics):  # the file grows as training goes (a resumed run's, at the end)
        history.append({"epoch": epoch, **metrics})
        write_history(history, args.history)
        tracking.log_epoch(epoch, metrics)

    resolved = {"data": dataclasses.asdict(params.data), "seed": params.seed, "kind": args.kind,
                args.kind: dataclasses.asdict(network)}
    checkpoint = Path(f"checkpoints/backprop-{args.kind}.npz")
    run_fingerprint = fingerprint(resolved)
    with tracking.start_run("backprop", resolved, inputs=[args.data.as_posix()], device="cpu (numpy)",
                            checkpoint=checkpoint, fingerprint=run_fingerprint), \
            threadpool_limits(params.threads):
        try:
            result = numpy_nn.fit(
                model, train_images=as_inputs(args.kind, splits.train_images),
                train_labels=splits.train_labels, val_images=as_inputs(args.kind, splits.val_images),
                val_labels=splits.val_labels, rng=rng, on_epoch=on_epoch, checkpoint=checkpoint,
                fingerprint=run_fingerprint, **dataclasses.asdict(network.training))
        except numpy_nn.TrainingDiverged as error:
            raise UserError(f"{error} (train_backprop.{args.kind}.training.lr)") from None
        write_history(result["history"], args.history)
        args.model_dir.mkdir(parents=True, exist_ok=True)
        numpy_nn.save_npz(args.model_dir / "weights.npz", model.state_dict())
        (args.model_dir / "params.json").write_text(json.dumps(resolved, indent=2) + "\n")
        tracking.tag_model(args.model_dir)
        tracking.log_summary({"best_epoch": result["best_epoch"],
                              "train_seconds": sum(r["epoch_seconds"] for r in result["history"])})
        tracking.log_artifacts([args.history, args.model_dir / "weights.npz"])


if __name__ == "__main__":
    run_main(main)
