"""Predictions for files, from a registered model or a model folder of the pipeline.

    python -m dlprojects.predict models:/<name>@champion shoe.png bag.jpg   # a registered model
    python -m dlprojects.predict models/<project>/... digit.png              # a model folder
    python -m dlprojects.predict models:/<name>@champion review.txt
    cat review.txt | python -m dlprojects.predict models:/<name>@champion -

(the registered names and model folders: each project's project.yaml, or reports/README.md)

Images (PNG, JPEG, ... up to 64 megapixels) are greyscaled and resized to the model's 28x28 pixels,
as the data sets store theirs (light strokes on a dark ground, like MNIST and FashionMNIST); 16-bit
pixels are scaled from their 0-65535 range; text files
are UTF-8 reviews. '-' reads one file from standard input. Prints CSV: the file, the predicted
label and each class's probability. Anything unreadable is one error line.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dlprojects.core.errors import UserError, run_main, utf8_text


def read_bytes(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as error:
        raise UserError(f"{name}: cannot read it ({error.strerror or error})") from None


MAX_PIXELS = 64_000_000  # an image file's pixels: a 28x28 model needs few; a bomb needs many
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def image_pixels(name: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 pixels of `shape` ((28, 28) grey, or (32, 32, 3) colour) from an image file's bytes.
    Pixels of more than 8 bits are scaled from their own range (16-bit grey: 0-65535), never
    clipped at 255."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise UserError(f"{name}: {width}x{height} pixels is more than this command "
                                    f"reads ({MAX_PIXELS:,}); scale the image down first")
                image = eight_bit(name, image).convert("RGB" if len(shape) == 3 else "L")
                return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.LANCZOS),
                                  dtype=np.uint8)
    except Image.DecompressionBombError:
        raise UserError(f"{name}: more pixels than this command reads ({MAX_PIXELS:,}); scale the "
                        f"image down first") from None
    except UnidentifiedImageError:  # PIL's message names the buffer by its memory address
        raise UserError(f"{name}: not an image this command reads (PNG, JPEG, GIF, BMP, TIFF, "
                        f"...): no known image format") from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
        raise UserError(f"{name}: not an image this command reads (PNG, JPEG, GIF, BMP, TIFF, "
                        f"...): {reason}") from None


def eight_bit(name: str, image):
    """`image` with 8-bit channels: 16-bit grey scaled by 255/65535 and rounded (PIL's own
    conversion clips at 255), 32-bit integer or float grey refused unless it is 16-bit or 0-1."""
    from PIL import Image

    if image.mode not in (*SIXTEEN_BIT, "I", "F"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode in SIXTEEN_BIT or (image.mode == "I" and low >= 0 and high <= 65535):
        scale = 255 / 65535
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale = 255
    else:
        raise UserError(f"{name}: {image.mode} pixels from {low:g} to {high:g} have no range this "
                        f"command knows; save the image with 8- or 16-bit channels")
    return Image.fromarray(np.rint(pixels * scale).astype(np.uint8))


def declared_input(model: str) -> tuple[str, tuple[int, ...] | None]:
    """("reviews", None) or ("images", their shape) for the model `model` names, read without
    loading it (its signature, or a folder's model.json), so that inputs are checked first; a
    folder's image shape is known once it loads (None here)."""
    if ":/" not in model:
        from dlprojects.core import models

        return models.manifest(Path(model))["input"], None
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    connect_store(model)
    try:
        inputs = get_model_info(model).signature.inputs
    except MlflowException as error:
        raise UserError(f"{model}: {error.message.splitlines()[0]}") from None
    except AttributeError:  # no signature: not a model of this pipeline
        raise UserError(f"{model}: logged without a signature, not by this pipeline") from None
    return ("images", tuple(inputs.inputs[0].shape[1:])) if inputs.is_tensor_spec() else (
        "reviews", None)


def load(model: str, bert: Path) -> tuple[Callable[[object], pd.DataFrame], tuple[int, ...] | None]:
    """(predict, image shape or None for reviews) of a registry URI or a model folder."""
    if ":/" in model:
        logged = load_logged(model)  # the store connected by `declared_input`, checked once
        inputs = logged.metadata.get_input_schema()
        if inputs is not None and inputs.is_tensor_spec():
            return logged.predict, tuple(inputs.inputs[0].shape[1:])
        return (lambda texts: logged.predict(pd.DataFrame({"review": list(texts)}))), None
    from dlprojects.core import models
    from dlprojects.core.serving.images import ImageClassifier
    from dlprojects.core.serving.reviews import ReviewClassifier

    folder = Path(model)
    if models.manifest(folder)["input"] == "reviews":  # a one-line error for a non-model folder
        reviews = ReviewClassifier().load(folder, bert)
        return (lambda texts: reviews.predict(None, pd.DataFrame({"review": texts}))), None
    images = ImageClassifier().load(folder)
    return (lambda batch: images.predict(None, batch)), images.network.shape


def connect_store(uri: str) -> None:
    """Point MLflow at the tracking store that resolves `uri`, after checking it is there and
    answers (seconds, not minutes of retries, when a server is down)."""
    import mlflow

    from dlprojects.core import tracking

    store = tracking.tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise UserError(f"{uri}: no MLflow store at {store.removeprefix('sqlite:///')}; run this "
                        f"in the project folder or set MLFLOW_TRACKING_URI")
    tracking.check_reachable(store)
    mlflow.set_tracking_uri(store)


def load_logged(uri: str):
    """The pyfunc model a registry or run URI names (`mlflow.pyfunc.load_model`), or one line;
    after `connect_store`."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        raise UserError(f"{uri}: {error.message.splitlines()[0]}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="models:/<name>@champion, runs:/<id>/model, or a folder "
                                      "under models/")
    parser.add_argument("files", nargs="+", help="image or text files; '-' reads standard input")
    parser.add_argument("--bert", type=Path, default=Path("data/raw/bert"),
                        help="the frozen BERT, for a sentiment model folder (default: %(default)s)")
    args = parser.parse_args()
    if args.files.count("-") > 1:
        raise UserError("'-' (standard input) can be given once")
    contents = [(name, read_bytes(name)) for name in args.files]  # before loading anything
    kind, shape = declared_input(args.model)
    batch = None
    if kind == "reviews":  # checked before the model (and its BERT) loads
        batch = [utf8_text(name, data) for name, data in contents]
    elif shape is not None:  # a registered model's images: checked before it loads
        batch = np.stack([image_pixels(name, data, shape) for name, data in contents])

    predict, shape = load(args.model, args.bert)
    if kind == "images" and batch is None:  # a folder's model: its shape known now (fast load)
        batch = np.stack([image_pixels(name, data, shape) for name, data in contents])
    from mlflow.exceptions import MlflowException

    try:
        frame = predict(batch)
    except MlflowException as error:
        raise UserError(error.message.splitlines()[-1]) from None
    writer = csv.writer(sys.stdout, lineterminator="\n")
    classes = [column for column in frame.columns if column != "label"]
    writer.writerow(["file", "label", *classes])
    for (name, _), (_, row) in zip(contents, frame.iterrows()):
        writer.writerow([name, row["label"], *(f"{row[column]:.6f}" for column in classes)])


if __name__ == "__main__":
    run_main(main)
