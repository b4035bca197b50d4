"""Digits: a LeNet-style CNN (conv 3x3 + ReLU + 2x2 max-pool, twice, then dense) on 8x8 digits.

``mpiexec -n 2 python -m gpudl.examples digits --distributed`` trains it data-parallel: fit
wraps the model in DistributedDataParallel and gives each rank its shard of every epoch.
``--amp`` trains in mixed precision: convolutions and linear layers in bfloat16 on the cpu
(``gd.autocast("cpu")``), in float16 with a ``GradScaler`` on cuda.
"""

import numpy as np

import gpudl as gd
import gpudl.distributed as dist
from gpudl import metrics, nn, optim
from gpudl.data import DataLoader, TensorDataset, load_digits
from gpudl.models import LeNet
from gpudl.optim.lr_scheduler import CosineAnnealingLR
from gpudl.train import fit, plot_history

from ._common import output_path, parse_args

TEST_FRACTION = 0.2      # 360 of the 1797 images are held out


def run(fast=False, seed=0, out=None, progress=True, epochs=None, amp=False):
    """Train on 80% of scikit-learn's digits, test on the rest (data-parallel when a process
    group is initialized; then only rank 0 shows progress and writes the plot).

    Returns a dict with the held-out accuracy, macro precision, recall and F1, the training
    loss of the first and last epoch, and the path of the training-curve plot (None on the
    other ranks). ``amp``: train under autocast (see the module docstring).
    """
    main_rank = not dist.is_initialized() or dist.get_rank() == 0
    gd.manual_seed(seed)
    images, labels = load_digits(as_tensors=False)                 # (1797, 1, 8, 8), (1797,)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    train_set = TensorDataset(gd.tensor(images[train]), gd.tensor(labels[train]))
    test_set = TensorDataset(gd.tensor(images[test]), gd.tensor(labels[test]))

    model = LeNet(num_classes=10, in_channels=1, image_size=8, channels=(16, 32),
                  hidden=(128, 64), dropout=0.1)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    epochs = epochs or (4 if fast else 20)
    history = fit(model, nn.CrossEntropyLoss(), optimizer,
                  DataLoader(train_set, batch_size=32, shuffle=True), epochs,
                  val_loader=DataLoader(test_set, batch_size=360), metrics=["accuracy"],
                  scheduler=CosineAnnealingLR(optimizer, T_max=epochs),
                  verbose=progress and main_rank, **(_mixed_precision() if amp else {}))

    model.eval()
    with gd.no_grad():
        predicted = model(test_set.tensors[0]).argmax(dim=1).numpy()
    truth = labels[test]
    return {"test_accuracy": metrics.accuracy(truth, predicted),
            "precision": metrics.precision(truth, predicted),
            "recall": metrics.recall(truth, predicted),
            "f1": metrics.f1_score(truth, predicted),
            "first_loss": history["loss"][0], "final_loss": history["loss"][-1],
            "png": plot_history(history, output_path(out, "digits_training.png"))
            if main_rank else None}


def _mixed_precision():
    """fit's autocast and scaler for the default device: bfloat16 needs no loss scaling (its
    range is float32's); float16 does."""
    if gd.device() == "cuda":
        return {"autocast": gd.autocast("cuda"), "scaler": gd.amp.GradScaler("cuda")}
    return {"autocast": gd.autocast("cpu")}


def main(argv=None):
    args = parse_args("digits", argv, __doc__, distributed=True, amp=True)
    if args.distributed:
        dist.init_process_group()          # nccl on the CUDA path, mpi otherwise
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet, amp=args.amp)
    if args.distributed:
        rank, world = dist.get_rank(), dist.get_world_size()
        dist.destroy_process_group()
        if rank != 0:
            return 0 if r["test_accuracy"] >= 0.95 else 1
        print(f"data-parallel over {world} ranks")
    print(f"held-out accuracy {r['test_accuracy']:.4f} (target >= 0.95); macro precision "
          f"{r['precision']:.4f}, recall {r['recall']:.4f}, F1 {r['f1']:.4f}")
    print(f"training curves: {r['png']}")
    return 0 if r["test_accuracy"] >= 0.95 else 1
