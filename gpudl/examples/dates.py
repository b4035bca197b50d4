"""Date translation: Seq2SeqAttention rewrites dates such as "Mon 12 Mar 1998" as 1998-03-12."""

import datetime

import numpy as np

import gpudl as gd
from gpudl import optim
from gpudl.data import DataLoader, TensorDataset
from gpudl.models import Seq2SeqAttention
from gpudl.nn import functional as F
from gpudl.train import fit

from ._common import EpochBar, parse_args

FORMATS = ["%d %B %Y", "%B %d, %Y", "%d %b %Y", "%b %d %Y", "%d/%m/%Y", "%A %d %b %Y"]
PAD, BOS, EOS = 0, 1, 2
SOURCE_CHARS = " ,/0123456789" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET_CHARS = "-0123456789"
SOURCE_VOCAB = {c: i + 3 for i, c in enumerate(SOURCE_CHARS)}      # 0, 1, 2: PAD, BOS, EOS
TARGET_VOCAB = {c: i + 3 for i, c in enumerate(TARGET_CHARS)}
TARGET_LEN = len("1998-03-12") + 1                                   # + EOS


def make_dates(n, rng):
    """``n`` random (human-readable, ISO) date pairs between 1950 and 2049."""
    start = datetime.date(1950, 1, 1).toordinal()
    days = rng.integers(0, 100 * 365, n)
    formats = rng.integers(0, len(FORMATS), n)
    pairs = []
    for day, fmt in zip(days, formats):
        date = datetime.date.fromordinal(int(start + day))
        pairs.append((date.strftime(FORMATS[fmt]), date.isoformat()))
    return pairs


def encode(pairs):
    """Token arrays: src (N, S) padded with PAD; tgt_in (N, 11) = BOS + ISO; tgt_out = ISO + EOS."""
    width = max(len(s) for s, _ in pairs)
    src = np.full((len(pairs), width), PAD, np.int64)
    tgt = np.empty((len(pairs), TARGET_LEN), np.int64)
    for i, (source, target) in enumerate(pairs):
        src[i, :len(source)] = [SOURCE_VOCAB[c] for c in source]
        tgt[i] = [TARGET_VOCAB[c] for c in target] + [EOS]
    tgt_in = np.concatenate([np.full((len(pairs), 1), BOS, np.int64), tgt[:, :-1]], axis=1)
    return src, tgt_in, tgt


def decode(tokens):
    chars = {i: c for c, i in TARGET_VOCAB.items()}
    return "".join(chars.get(int(t), "") for t in tokens if t != EOS)


def sequence_loss(logits, target):
    """Cross entropy over every target position: logits (N, T, V), target (N, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def run(fast=False, seed=0, out=None, progress=True, epochs=None, n_train=None):
    """Train with teacher forcing, then translate 1000 new dates greedily.

    Returns a dict with the exact-match accuracy on those held-out dates, the first and final
    training loss, and a few example translations.
    """
    gd.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_train = n_train or (3000 if fast else 8000)
    train = TensorDataset(*(gd.tensor(a) for a in encode(make_dates(n_train, rng))))
    test_pairs = make_dates(1000, rng)
    test_src = gd.tensor(encode(test_pairs)[0])

    model = Seq2SeqAttention(len(SOURCE_CHARS) + 3, len(TARGET_CHARS) + 3, embed_dim=32,
                             hidden_size=64, attention="dot", pad_idx=PAD)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    epochs = epochs or (3 if fast else 4)
    history = fit(model, sequence_loss, optimizer,
                  DataLoader(train, batch_size=64, shuffle=True), epochs, verbose=False,
                  callbacks=[EpochBar(epochs, "dates", not progress)])

    predictions = model.greedy_decode(test_src, TARGET_LEN, BOS, eos=EOS).numpy()
    translated = [decode(row) for row in predictions]
    exact = np.mean([t == iso for t, (_, iso) in zip(translated, test_pairs)])
    examples = [(s, t) for (s, _), t in zip(test_pairs[:5], translated[:5])]
    return {"exact_match": float(exact), "first_loss": history["loss"][0],
            "final_loss": history["loss"][-1], "examples": examples}


def main(argv=None):
    args = parse_args("dates", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    for source, translation in r["examples"]:
        print(f"{source:>26s} -> {translation}")
    print(f"exact-match accuracy on 1000 new dates: {r['exact_match']:.3f} (target >= 0.95)")
    return 0 if r["exact_match"] >= 0.95 else 1
