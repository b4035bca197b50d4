"""XOR with a 2-8-1 MLP trained by backprop: autograd and plain gradient descent, nothing else."""

import argparse

import numpy as np
from tqdm import trange

import gpudl as gd


def train(steps=2000, lr=0.5, seed=0, progress=True):
    """Train on the four XOR points; returns (final loss, predictions as 0/1 array)."""
    gd.manual_seed(seed)
    x = gd.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = gd.tensor([[0.0], [1.0], [1.0], [0.0]])
    w1 = (gd.randn(2, 8) * 1.0).requires_grad_()
    b1 = gd.zeros(8, requires_grad=True)
    w2 = (gd.randn(8, 1) * 0.5).requires_grad_()
    b2 = gd.zeros(1, requires_grad=True)
    params = [w1, b1, w2, b2]
    for _ in trange(steps, desc="xor", disable=not progress, mininterval=0.5):
        p = ((x @ w1 + b1).tanh() @ w2 + b2).sigmoid()
        loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
        for w in params:
            w.grad = None
        loss.backward()
        with gd.no_grad():
            for w in params:
                w.sub_(w.grad, alpha=lr)
    return loss.item(), (p.numpy() > 0.5).astype(int).ravel()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpudl.examples xor")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    loss, predictions = train(args.steps)
    print(f"final loss {loss:.4f}; predictions {predictions.tolist()} (target [0, 1, 1, 0])")
    return 0 if np.array_equal(predictions, [0, 1, 1, 0]) else 1
