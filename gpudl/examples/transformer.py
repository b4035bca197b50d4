"""Transformer: classify generated texts by topic (keywords of two topics mixed with filler)."""

import numpy as np

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader, TensorDataset
from gpudl.models import TransformerClassifier
from gpudl.train import evaluate, fit

from ._common import EpochBar, parse_args

PAD = 0
TOPICS = ("sport", "politics", "science", "music")
WORDS_PER_TOPIC = 8                  # topic t's keywords are ids 1 + 8t ... 8 + 8t
FILLER = np.arange(1 + len(TOPICS) * WORDS_PER_TOPIC, 80)     # words of no topic
VOCAB = 80
MIN_LEN, MAX_LEN = 8, 20


def make_texts(n, rng):
    """``n`` padded token sequences (n, MAX_LEN) and their topics (n,).

    Each text has 3 to 5 keywords of its topic, 1 or 2 keywords of one other topic (so counting
    matters, not mere presence) and filler words, in random order and of random length.
    """
    tokens = np.full((n, MAX_LEN), PAD, np.int64)
    labels = rng.integers(0, len(TOPICS), n)
    for i, topic in enumerate(labels):
        other = (topic + rng.integers(1, len(TOPICS))) % len(TOPICS)
        length = rng.integers(MIN_LEN, MAX_LEN + 1)
        n_own, n_other = rng.integers(3, 6), rng.integers(1, 3)
        words = np.concatenate([
            1 + topic * WORDS_PER_TOPIC + rng.integers(0, WORDS_PER_TOPIC, n_own),
            1 + other * WORDS_PER_TOPIC + rng.integers(0, WORDS_PER_TOPIC, n_other),
            rng.choice(FILLER, length - n_own - n_other)])
        tokens[i, :length] = rng.permutation(words)
    return tokens, labels


def run(fast=False, seed=0, out=None, progress=True, epochs=None, n_train=None):
    """Train on generated texts; returns a dict with the held-out accuracy (chance is 0.25)
    and the first and final training loss."""
    gd.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_train = n_train or (1500 if fast else 6000)
    train = TensorDataset(*(gd.tensor(a) for a in make_texts(n_train, rng)))
    test = TensorDataset(*(gd.tensor(a) for a in make_texts(1000, rng)))

    model = TransformerClassifier(VOCAB, d_model=32, nhead=4, num_layers=2,
                                  num_classes=len(TOPICS), max_len=MAX_LEN, dim_feedforward=64,
                                  dropout=0.1, pad_idx=PAD)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    epochs = epochs or (3 if fast else 8)
    history = fit(model, nn.CrossEntropyLoss(), optimizer,
                  DataLoader(train, batch_size=64, shuffle=True), epochs, verbose=False,
                  metrics=["accuracy"], callbacks=[EpochBar(epochs, "transformer", not progress)])
    scores = evaluate(model, nn.CrossEntropyLoss(), DataLoader(test, batch_size=250),
                      metrics=["accuracy"])
    return {"test_accuracy": scores["accuracy"], "first_loss": history["loss"][0],
            "final_loss": history["loss"][-1]}


def main(argv=None):
    args = parse_args("transformer", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"held-out accuracy {r['test_accuracy']:.3f} (chance 0.25; target >= 0.9); "
          f"training loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}")
    return 0 if r["test_accuracy"] >= 0.9 else 1
