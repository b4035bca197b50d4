"""All-reduce bandwidth of gpudl.distributed, per backend, beside raw MPI and torch's gloo.

    mpiexec -n 2 python -m benchmarks.allreduce                     # backend mpi (CPU tensors)
    mpiexec -n 2 python -m benchmarks.allreduce --backend nccl      # one GPU per rank
    mpiexec -n 2 python -m benchmarks.allreduce --torch             # add torch.distributed gloo
    RANK=0 WORLD_SIZE=1 python -m benchmarks.allreduce --backend nccl   # one GPU (gpu_check.sh)

Rank 0 prints a Markdown table: per message size the median time of one in-place float32
all-reduce (SUM) and its bus bandwidth, ``bytes * 2 (n - 1) / n / time`` as nccl-tests report
it (the bytes each rank sends and receives in a ring all-reduce), so figures for different
world sizes compare. A world of one moves nothing between ranks (bus bandwidth 0): the table
then gives the algorithm bandwidth, ``bytes / time``, the per-call floor of the backend (NCCL
refuses two ranks on one GPU, so one GPU gives only this figure). Each timed call is preceded
by a barrier, so ranks start together.
"""

import argparse
import os
import statistics
import time

import numpy as np

import gpudl as gd
import gpudl.distributed as dist

SIZES = (4 << 10, 256 << 10, 4 << 20, 32 << 20)       # bytes: latency- to bandwidth-bound


def timed(fn, sync, repeats):
    times = []
    for _ in range(repeats + 2):
        dist.barrier()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])                 # the first two are warm-up


def bandwidth_gbs(nbytes, seconds, world):
    """Bus bandwidth (nccl-tests' busbw) for a world of several ranks, else bytes / time."""
    moved = nbytes * 2 * (world - 1) / world if world > 1 else nbytes
    return moved / seconds / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.allreduce")
    parser.add_argument("--backend", default=None, choices=("mpi", "nccl"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--torch", action="store_true", help="also time torch.distributed gloo")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, metavar="BYTES",
                        help="message sizes in bytes, multiples of 4 (default: 4 KiB to 32 MiB)")
    args = parser.parse_args(argv)
    if any(n <= 0 or n % 4 for n in args.sizes):
        parser.error(f"--sizes must be positive multiples of 4 bytes, got {args.sizes}")
    dist.init_process_group(args.backend)
    rank, world, backend = dist.get_rank(), dist.get_world_size(), dist.get_backend()
    device = "cuda" if backend == "nccl" else "cpu"
    rows = []
    for nbytes in args.sizes:
        t = gd.ones(nbytes // 4, device=device)
        row = {"bytes": nbytes,
               f"gpudl {backend}": timed(lambda: dist.all_reduce(t), gd.cuda.synchronize,
                                         args.repeats)}
        if backend == "mpi":
            from mpi4py import MPI
            a = np.ones(nbytes // 4, np.float32)
            row["mpi4py Allreduce"] = timed(
                lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, a), lambda: None, args.repeats)
        rows.append(row)
    if args.torch:
        _torch_gloo(rows, rank, world, args.repeats)
    if rank == 0:
        columns = [k for k in rows[0] if k != "bytes"]
        unit = "bus GB/s" if world > 1 else "algorithm GB/s, bytes / time: a world of one"
        print(f"world {world}; median ms per all-reduce ({unit})\n")
        print("| size | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        for row in rows:
            cells = [f"{1e3 * row[c]:.3g} ({bandwidth_gbs(row['bytes'], row[c], world):.2f})"
                     for c in columns]
            print(f"| {row['bytes'] >> 10} KiB | " + " | ".join(cells) + " |")
    dist.destroy_process_group()


def _torch_gloo(rows, rank, world, repeats):
    import torch
    import torch.distributed as tdist
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    for row in rows:
        t = torch.ones(row["bytes"] // 4)
        row["torch gloo"] = timed(lambda: tdist.all_reduce(t), lambda: None, repeats)
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
