"""Sentiment: IMDB reviews -> frozen-BERT token states (`embed_imdb`) -> a bidirectional RNN
(`train_sentiment`, `evaluate_sentiment`), and text in, P(positive) out (`predict`).

One module per job: `reviews` (the raw reviews, subsets, truncation), `bert` (checking, loading
and running the frozen BERT), `store` (the embedding store the `embed_imdb` stage writes),
`batches` (length-bucketed batches of stored states), `model` (the RNN, saved and loaded),
`predict` (review text to probability) and `evaluation` (test metrics, curves, example reviews).
The first three are all `embed_imdb` reads, so editing the RNN never invalidates the store.
"""
