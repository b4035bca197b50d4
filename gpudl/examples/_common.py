"""What the example scripts share: command-line options, an epoch progress bar, image grids."""

import argparse
import os

import numpy as np

from ..callbacks import Callback

DEFAULT_OUT = "gpudl_outputs"


def parse_args(name, argv, description, distributed=False, amp=False):
    """The options every example takes: --seed, --out, --fast, --quiet (and --distributed for
    the examples that train data-parallel under mpiexec or torchrun, --amp for those that can
    train in mixed precision)."""
    parser = argparse.ArgumentParser(prog=f"python -m gpudl.examples {name}",
                                     description=description)
    if distributed:
        parser.add_argument("--distributed", action="store_true",
                            help="data-parallel over the ranks of mpiexec -n N (or torchrun)")
    if amp:
        parser.add_argument("--amp", action="store_true",
                            help="mixed precision: autocast (bfloat16 on the cpu; float16 with "
                                 "a GradScaler on cuda)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"folder for the PNG files (default ./{DEFAULT_OUT})")
    parser.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def output_path(out, filename):
    """``out/filename`` (``out`` defaults to ./gpudl_outputs), creating the folder."""
    folder = out or DEFAULT_OUT
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, filename)


class EpochBar(Callback):
    """One tqdm bar over all epochs for ``gpudl.train.fit(..., verbose=False)``, showing the
    latest logs; better than a bar per epoch when epochs take a fraction of a second."""

    def __init__(self, epochs, desc, disable=False):
        self.epochs, self.desc, self.disable = epochs, desc, disable
        self.bar = None

    def on_train_begin(self, model):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=self.epochs, desc=self.desc, unit="epoch", disable=self.disable)

    def on_epoch_end(self, epoch, logs, model):
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
        self.bar.update(1)
        return False

    def on_train_end(self, model):
        self.bar.close()


def save_image_grid(rows, path, titles=None, scale=0.6):
    """Save rows of grey images (each row an array (n, H, W), values in [0, 1]) as one PNG.

    ``titles`` labels each row on its left. Uses matplotlib's Agg canvas (no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    rows = [np.asarray(r) for r in rows]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    figure = Figure(figsize=(n_cols * scale + (1.2 if titles else 0), n_rows * scale))
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.axis("off")
        if titles:
            axes[i, 0].set_ylabel(titles[i], rotation=0, ha="right", va="center", fontsize=8)
    figure.subplots_adjust(wspace=0.05, hspace=0.05, left=0.15 if titles else 0.01, right=0.99,
                           top=0.99, bottom=0.01)
    figure.savefig(path, format="png", dpi=100)
    return path
