"""Sentiment: review cleaning and truncation, the compact embedding store, the RNN head over
variable-length reviews, predict, and the bad inputs that must fail before any work.

A tiny random BERT (2 layers, hidden 32, 128 positions, a character-level vocabulary) stands in for
MiniLM, so nothing here needs the download stages.
"""

from __future__ import annotations

import json
import string
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import committed
from dlprojects.core.config import ConfigError, parse
from dlprojects.sentiment.params import EmbedImdbParams
from dlprojects.core.errors import UserError
from dlprojects.sentiment.batches import ReviewBatches
from dlprojects.sentiment.bert import embed, encode, load_bert
from dlprojects.sentiment.evaluation import binary_metrics, curves, example_reviews
from dlprojects.sentiment.model import SentimentRNN, save_rnn
from dlprojects.sentiment.predict import SentimentPredictor
from dlprojects.sentiment.reviews import balanced_subset, clean_review, split_validation, truncate
from dlprojects.sentiment.store import build_store, load_split, read_meta, store_bytes

CPU = torch.device("cpu")
POSITIVE = ["great", "wonderful", "excellent", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "terrible", "boring", "hated", "dull", "waste"]
FILLER = ["the", "film", "movie", "plot", "actor", "was", "and", "a", "story", "scene", "it"]
TINY = EmbedImdbParams(**{**committed("embed_imdb"), "train_samples": 16, "test_samples": 8,
                          "max_length": 48, "head_tokens": 8, "bert_layers": [-2, -1],
                          "batch_size": 5, "device": "cpu", "threads": 1})


# --------------------------------------------------------------------------------------- fixtures


def write_tiny_bert(folder: Path, max_positions: int = 128) -> Path:
    """A random 2-layer BERT with a word + character vocabulary, saved like a Hub folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    characters = string.ascii_lowercase + string.digits
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + FILLER + POSITIVE + NEGATIVE
             + list(characters + string.punctuation) + [f"##{c}" for c in characters])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={token: number for number, token in enumerate(vocab)})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=max_positions)
    BertModel(config).save_pretrained(folder)
    return folder


def write_tiny_imdb(folder: Path, per_split: int = 48, seed: int = 0) -> Path:
    """Synthetic reviews with `<br />` tags: sentiment words among filler, 5 to 90 words long."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        reviews = []
        for number in range(per_split):
            label = number % 2
            words = list(rng.choice(FILLER, rng.integers(3, 80)))
            words += list(rng.choice(POSITIVE if label else NEGATIVE, rng.integers(2, 10)))
            rng.shuffle(words)
            words.insert(len(words) // 2, "<br /><br />")
            reviews.append({"text": " ".join(words).capitalize() + ".", "label": label})
        reviews.sort(key=lambda review: review["label"])
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine: a second thread mostly waits (20x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def tiny_imdb(tmp_path_factory) -> Path:
    return write_tiny_imdb(tmp_path_factory.mktemp("imdb"))


@pytest.fixture(scope="module")
def store(tiny_imdb, tiny_bert, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embeddings") / "imdb"
    build_store(tiny_imdb, tiny_bert, out, TINY, CPU)
    return out


# ------------------------------------------------------------------------------ reviews and tokens


def test_line_breaks_are_removed_and_whitespace_collapsed():
    cleaned = clean_review("Great.<br /><br />Loved it<br/>and<BR>more  \n")
    assert cleaned == "Great. Loved it and more"
    assert clean_review("<br /> <br />") == ""


def test_truncation_keeps_the_head_the_tail_or_both():
    ids = list(range(10))
    assert truncate(ids, 4, "head_tail", head=1) == [0, 7, 8, 9]
    assert truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate(ids, 10, "head_tail", head=1) == ids  # short reviews stay whole
    assert truncate(ids, 4, "head_tail", head=0) == [6, 7, 8, 9]


def test_encode_adds_special_tokens_and_keeps_head_plus_tail(tiny_bert):
    tokenizer, _ = load_bert(tiny_bert, device=CPU)
    text = "the " * 20 + "<br />" + "great " * 3 + "awful"
    (ids,) = encode([text], tokenizer, max_length=8, truncation="head_tail", head_tokens=2)
    vocab = tokenizer.get_vocab()
    assert ids == [tokenizer.cls_token_id, vocab["the"], vocab["the"], vocab["great"],
                   vocab["great"], vocab["great"], vocab["awful"], tokenizer.sep_token_id]
    assert "<" not in tokenizer.decode(encode(["a<br />b"], tokenizer, max_length=16)[0])


def test_subsets_are_balanced_and_seeded_and_validation_is_stratified():
    labels = np.repeat([0, 1], 50)
    subset = balanced_subset(labels, 20, seed=3)
    assert len(subset) == 20 and labels[subset].sum() == 10
    assert np.array_equal(subset, balanced_subset(labels, 20, seed=3))
    assert not np.array_equal(subset, balanced_subset(labels, 20, seed=4))
    assert np.array_equal(balanced_subset(labels, 0, seed=3), np.arange(100))
    train, val = split_validation(labels, 0.1, seed=0)
    assert len(val) == 10 and labels[val].sum() == 5
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))


# -------------------------------------------------------------------------------- embedding store


def test_the_store_round_trips_fp16_states_of_real_tokens_only(store, tiny_imdb, tiny_bert):
    from dlprojects.sentiment.reviews import read_reviews

    meta = read_meta(store)
    train = load_split(store, "train")
    assert meta["splits"]["train"] == {"reviews": 16, "tokens": int(train.offsets[-1]),
                                       "bytes": int(train.offsets[-1]) * 32 * 2}
    assert train.states.dtype == np.float16 and train.states.shape == (train.offsets[-1], 32)
    assert train.labels.sum() == 8 and len(train) == 16
    # nothing but real tokens: states + offsets + labels + rows + meta, a few KB of headers
    assert store_bytes(store) - sum(s["bytes"] for s in meta["splits"].values()) < 8_000

    tokenizer, bert = load_bert(tiny_bert, device=CPU)
    texts, _ = read_reviews(tiny_imdb / "train.jsonl")
    token_ids = encode([texts[row] for row in train.rows], tokenizer, max_length=48, head_tokens=8)
    assert np.array_equal(train.lengths, [len(ids) for ids in token_ids])
    assert train.lengths.max() == 48  # some reviews were truncated
    for review in (0, 7, 15):  # each review alone, unpadded, equals its slice of the batched store
        with torch.inference_mode():
            hidden = bert(input_ids=torch.tensor([token_ids[review]]),
                          output_hidden_states=True).hidden_states
        expected = (hidden[-2][0] + hidden[-1][0]) / 2
        np.testing.assert_allclose(train.review(review), expected.numpy(), atol=2e-3)


def test_trimming_unused_layers_keeps_the_states_asked_for(tiny_bert):
    from dlprojects.sentiment.bert import trim_to_layers

    tokenizer, bert = load_bert(tiny_bert, device=CPU)
    depth = len(bert.encoder.layer)
    token_ids = encode(["a fine film, well acted", "dull"], tokenizer, max_length=16)
    full = {}
    for index, states in embed(token_ids, bert, batch_size=2, device=CPU, layers=[-3, -2]):
        full.update(zip(index, states))
    layers = trim_to_layers(bert, [-3, -2])
    assert layers == [depth - 2, depth - 1] and len(bert.encoder.layer) == depth - 1
    for index, states in embed(token_ids, bert, batch_size=2, device=CPU, layers=layers):
        for review, review_states in zip(index, states):
            np.testing.assert_array_equal(review_states, full[review])


def test_length_sorted_batches_equal_the_naive_padded_loop(tiny_bert):
    tokenizer, bert = load_bert(tiny_bert, device=CPU)
    texts = [" ".join(["great"] * n + ["film"] * (n % 3)) for n in (1, 9, 3, 30, 12, 2)]
    token_ids = encode(texts, tokenizer, max_length=32)
    fast, naive = [None] * 6, [None] * 6
    for index, states in embed(token_ids, bert, batch_size=4, device=CPU):
        for review, review_states in zip(index, states):
            fast[review] = review_states
    for index, states in embed(token_ids, bert, batch_size=4, device=CPU, sort_by_length=False,
                               pad_to=32):
        for review, review_states in zip(index, states):
            naive[review] = review_states
    for a, b, ids in zip(fast, naive, token_ids):
        assert a.shape == b.shape == (len(ids), 32)
        np.testing.assert_allclose(a, b, atol=2e-3)


# ------------------------------------------------------------------------------------- RNN head


@pytest.mark.parametrize("pooling", ["last", "mean_max"])
@pytest.mark.parametrize(("cell", "layers", "packed"),
                         [("gru", 1, True), ("gru", 1, False), ("lstm", 2, True),
                          ("lstm", 2, False)])
def test_padding_never_changes_a_reviews_output(cell, layers, packed, pooling):
    torch.manual_seed(0)
    model = SentimentRNN(input_size=6, hidden_size=5, layers=layers, cell=cell, projection=4,
                         pooling=pooling).eval()
    model.packed = packed
    lengths = torch.tensor([3, 7, 1, 5])
    states = torch.randn(4, 7, 6)
    alone = torch.cat([model(states[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths)])
    garbage = states.clone()
    for row, length in enumerate(lengths):
        garbage[row, length:] = 100.0  # whatever fills the padding must not matter
    wider = torch.cat([garbage, torch.randn(4, 4, 6)], dim=1)
    torch.testing.assert_close(model(states, lengths), alone)
    torch.testing.assert_close(model(garbage, lengths), alone)
    torch.testing.assert_close(model(wider, lengths), alone)


def test_packed_and_padded_runs_agree_in_outputs_and_gradients():
    torch.manual_seed(1)
    model = SentimentRNN(input_size=6, hidden_size=5, layers=2, dropout=0.0)
    lengths = torch.tensor([2, 6, 4])
    states = torch.randn(3, 6, 6)
    results = []
    for packed in (True, False):
        model.packed = packed
        model.zero_grad()
        logits = model(states, lengths)
        logits.square().sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_a_tiny_rnn_overfits_one_batch():
    torch.manual_seed(0)
    lengths = torch.randint(2, 12, (16,))
    states = torch.randn(16, 12, 8)
    labels = torch.arange(16) % 2
    model = SentimentRNN(input_size=8, hidden_size=16, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(120):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(states, lengths), labels)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (model(states, lengths).argmax(dim=1) == labels).all()


def test_review_batches_cover_every_review_once_and_shuffle_by_seed(store):
    train = load_split(store, "train")
    indices = np.arange(2, 16)
    batches = ReviewBatches(train, indices, 4, device=CPU, shuffle=True)
    seen = []
    for (states, lengths), labels in batches(torch.Generator().manual_seed(0)):
        assert states.dtype == torch.float32 and states.shape[1] == lengths.max()
        seen += [int(i) for i in lengths]
        assert len(labels) == len(lengths) <= 4
    assert sorted(seen) == sorted(train.lengths[indices].tolist())
    first = [lengths.tolist() for (_, lengths), _ in batches(torch.Generator().manual_seed(0))]
    again = [lengths.tolist() for (_, lengths), _ in batches(torch.Generator().manual_seed(0))]
    assert first == again


# ---------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model_dir(store, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "sentiment"
    save_rnn(SentimentRNN(input_size=32, hidden_size=8), folder, embedding=read_meta(store),
             train_params={"loop": {"amp": True}})
    return folder


def test_predict_scores_text_exactly_as_the_pipeline_embedded_it(model_dir, tiny_bert, tiny_imdb,
                                                                  store):
    from dlprojects.sentiment.reviews import read_reviews

    predictor = SentimentPredictor.load(model_dir, tiny_bert, device=CPU)
    test = load_split(store, "test")
    texts, _ = read_reviews(tiny_imdb / "test.jsonl")
    probabilities = predictor([texts[row] for row in test.rows])
    assert probabilities.shape == (len(test),) and ((0 < probabilities) & (probabilities < 1)).all()
    batches = ReviewBatches(test, np.arange(len(test)), 3, device=CPU)
    with torch.inference_mode():
        stored = torch.cat([predictor.rnn(*inputs).softmax(dim=1)[:, 1] for inputs, _ in batches()])
    np.testing.assert_allclose(probabilities, stored.numpy(), atol=1e-5)


@pytest.mark.parametrize("text", ["", "   \n\t", "<br /><br />"])
def test_predict_rejects_empty_text(model_dir, tiny_bert, text):
    predictor = SentimentPredictor.load(model_dir, tiny_bert, device=CPU)
    with pytest.raises(UserError, match="review 2 of 2 is empty"):
        predictor(["A fine film.", text])


def test_predict_refuses_a_bert_other_than_the_one_it_was_trained_on(model_dir, tmp_path):
    other = write_tiny_bert(tmp_path / "other", max_positions=64)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(UserError, match="download.bert.model: the BERT in .* is not the one"):
        SentimentPredictor.load(model_dir, other, device=CPU)


def test_predict_without_a_trained_model_says_which_stage_to_run(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="run `dvc repro train_sentiment` first"):
        SentimentPredictor.load(tmp_path / "models/sentiment", tiny_bert, device=CPU)


# -------------------------------------------------------------------------------- bad inputs


def test_max_length_beyond_the_positions_fails_before_any_work(tiny_imdb, tiny_bert, tmp_path):
    with pytest.raises(UserError, match=r"^embed_imdb\.max_length: 200 exceeds the 128 positions"):
        build_store(tiny_imdb, tiny_bert, tmp_path / "out", replace(TINY, max_length=200), CPU)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_folder_fails_naming_the_param(tiny_imdb, tmp_path):
    with pytest.raises(UserError, match=r"^download\.bert\.model: .*nowhere is missing"):
        build_store(tiny_imdb, tmp_path / "nowhere", tmp_path / "out", TINY, CPU)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_bert_fails_naming_the_param(tiny_imdb, tmp_path):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt/config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError,
                       match=r"^download\.bert\.model: .* holds a 'gpt2' model, not a BERT"):
        build_store(tiny_imdb, tmp_path / "gpt", tmp_path / "out", TINY, CPU)


def test_a_layer_the_bert_lacks_fails_naming_the_param(tiny_imdb, tiny_bert, tmp_path):
    with pytest.raises(UserError, match=r"^embed_imdb\.bert_layers: layer -4 does not exist"):
        build_store(tiny_imdb, tiny_bert, tmp_path / "out", replace(TINY, bert_layers=[-4]), CPU)


@pytest.mark.parametrize(("data", "message"), [
    ({"head_tokens": 300}, r"embed_imdb\.head_tokens: 300 must be in \[0, max_length - 2 = 222\]"),
    ({"train_samples": 30000}, r"embed_imdb\.train_samples: 30000 must be 0 \(all\) or in"),
    ({"truncation": "middle"}, r"embed_imdb\.truncation: 'middle' is not one of"),
    ({"bert_layers": []}, r"embed_imdb\.bert_layers: name at least one hidden layer"),
])
def test_bad_embed_params_name_their_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse(EmbedImdbParams, {**committed("embed_imdb"), **data}, "embed_imdb")


# ------------------------------------------------------------------------------- test figures


def test_binary_metrics_curves_and_examples():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    metrics = binary_metrics(labels, probabilities)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["roc_auc"] == pytest.approx(7 / 9)
    roc, pr = curves(labels, probabilities, points=3)
    assert len(roc["fpr"]) <= 3 and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    assert set(pr) == {"recall", "precision", "threshold"}
    texts = [f"review {n}<br />text" for n in range(6)]
    examples = example_reviews(texts, labels, probabilities, count=4)
    assert [e["kind"] for e in examples] == ["confident, right", "confident, right",
                                             "confident, wrong", "unsure"]
    assert examples[0]["index"] == 5 and examples[1]["index"] == 0 and examples[2]["index"] == 3
    assert "<br />" not in examples[0]["text"]
