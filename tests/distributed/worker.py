"""One rank of the distributed tests: ``mpiexec -n N python tests/distributed/worker.py CASE...``.

Each case checks itself against a single-process reference and raises on a mismatch (which
aborts the job); the parent test reads ``case ok`` lines from rank 0's output. Several cases run
in one launch to keep the number of MPI start-ups (and the tests' time) small.
"""

import contextlib
import io
import os
import signal
import sys
import time

import numpy as np

import gpudl as gd
import gpudl.distributed as dist
from gpudl import nn, optim
from gpudl.nn.parallel import DistributedDataParallel as DDP

STEPS, PER_RANK = 4, 6          # optimizer steps; samples per rank per step


def report(case):
    dist.barrier()
    if dist.get_rank() == 0:
        print(f"{case} ok", flush=True)


def make_model(seed):
    gd.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def batches(world, steps=STEPS, seed=7):
    """The same global batches on every rank: (steps, world * PER_RANK, ...)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, world * PER_RANK, 5)).astype(np.float32)
    y = rng.integers(0, 3, (steps, world * PER_RANK))
    return x, y


def shard(a, rank):
    return a[rank * PER_RANK:(rank + 1) * PER_RANK]


def train_reference(x, y, make_optimizer, steps=STEPS):
    model = make_model(0)
    opt = make_optimizer(model.parameters())
    for s in range(steps):
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(gd.tensor(x[s])), gd.tensor(y[s])).backward()
        opt.step()
    return model


def assert_same_on_every_rank(model):
    for name, p in model.named_parameters():
        mine = gd.tensor(p.numpy().copy())
        gathered = [gd.zeros(p.shape) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mine)
        for r, other in enumerate(gathered):
            if not np.array_equal(other.numpy(), mine.numpy()):
                raise AssertionError(f"{name} differs between rank {dist.get_rank()} and {r}")


def assert_matches(model, reference):
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=2e-5, atol=2e-6, err_msg=name)


# ----------------------------------------------------------------- cases
def case_collectives():
    rank, world = dist.get_rank(), dist.get_world_size()
    values = np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * rank
    every = [np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * r for r in range(world)]
    for op, expected in ((dist.ReduceOp.SUM, np.sum(every, 0)), (dist.ReduceOp.AVG,
                         np.mean(every, 0)), (dist.ReduceOp.MAX, np.max(every, 0)),
                         (dist.ReduceOp.MIN, np.min(every, 0))):
        t = gd.tensor(values)
        assert dist.all_reduce(t, op=op) is None
        np.testing.assert_allclose(t.numpy(), expected, rtol=1e-6, err_msg=str(op))
    for op, expected in ((dist.ReduceOp.SUM, np.sum(every, 0)),
                         (dist.ReduceOp.AVG, np.mean(every, 0) / 3)):
        t = gd.tensor(values / (3 if op is dist.ReduceOp.AVG else 1), dtype=gd.bfloat16)
        dist.all_reduce(t, op=op)         # MPI has no bfloat16: reduced in float32, rounded once
        assert t.dtype == gd.bfloat16
        np.testing.assert_array_equal(t.numpy(), expected.astype(gd.bfloat16), err_msg=str(op))
    t = gd.tensor(values / 3, dtype=gd.bfloat16)
    dist.broadcast(t, src=world - 1)
    np.testing.assert_array_equal(t.numpy(), (every[-1] / 3).astype(gd.bfloat16))
    counts = gd.tensor([rank + 1])
    dist.all_reduce(counts)                           # integers, default SUM
    assert counts.item() == world * (world + 1) // 2
    t = gd.tensor(values)
    dist.broadcast(t, src=world - 1)
    np.testing.assert_array_equal(t.numpy(), every[-1])
    out = [gd.zeros((2, 3)) for _ in range(world)]
    work = dist.all_gather(out, gd.tensor(values), async_op=True)
    work.wait()
    np.testing.assert_array_equal(np.stack([o.numpy() for o in out]), np.stack(every))
    inputs = [gd.tensor(values + 100 * k) for k in range(world)]
    result = gd.zeros((2, 3))
    dist.reduce_scatter(result, inputs, op=dist.ReduceOp.SUM)
    np.testing.assert_allclose(result.numpy(), np.sum(every, 0) + 100 * rank * world)
    report("collectives")


def case_ddp():
    """DDP with SGD (scale-sensitive, unlike Adam) equals one process training on the
    concatenated batches."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = batches(world)
    model = make_model(100 + rank)              # different inits: DDP broadcasts rank 0's
    gd.manual_seed(0)
    reference_init = make_model(0)
    if rank == 0:
        model.load_state_dict(reference_init.state_dict())
    ddp = DDP(model, bucket_cap_mb=0.001)       # ~1 KB buckets: several buckets in flight
    assert len(ddp.reducer.buckets) > 1
    opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(STEPS):
        opt.zero_grad()
        nn.CrossEntropyLoss()(ddp(gd.tensor(shard(x[s], rank))),
                              gd.tensor(shard(y[s], rank))).backward()
        opt.step()
    assert_same_on_every_rank(model)
    assert_matches(model, train_reference(x, y, lambda p: optim.SGD(p, lr=0.1, momentum=0.9)))
    assert ddp.reducer.launch_log[:len(ddp.reducer.buckets)] == list(range(
        len(ddp.reducer.buckets)))
    report("ddp")


def case_no_sync():
    """Two micro-batches, the first under no_sync, equal one step on both (SGD, mean losses)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = batches(world, steps=2 * STEPS, seed=11)
    ddp = DDP(make_model(0))
    opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for s in range(STEPS):
        opt.zero_grad()
        with ddp.no_sync():
            (loss_fn(ddp(gd.tensor(shard(x[2 * s], rank))),
                     gd.tensor(shard(y[2 * s], rank))) / 2).backward()
        local = [p.grad.numpy().copy() for p in ddp.parameters()]
        (loss_fn(ddp(gd.tensor(shard(x[2 * s + 1], rank))),
                 gd.tensor(shard(y[2 * s + 1], rank))) / 2).backward()
        if s == 0:       # the no_sync backward stayed local: ranks' grads differ until synced
            gathered = [gd.zeros(local[0].shape) for _ in range(world)]
            dist.all_gather(gathered, gd.tensor(local[0]))
            assert not np.array_equal(gathered[0].numpy(), gathered[1].numpy())
        opt.step()
    assert_same_on_every_rank(ddp.module)
    joined_x = np.concatenate([x[0::2], x[1::2]], axis=1)    # both micro-batches per step
    joined_y = np.concatenate([y[0::2], y[1::2]], axis=1)
    reference = _reference_two_halves(joined_x, joined_y, world)
    assert_matches(ddp.module, reference)
    report("no_sync")


def _reference_two_halves(x, y, world):
    """One process: per step the mean of the two micro-batches' mean losses over all ranks."""
    model = make_model(0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    half = world * PER_RANK
    for s in range(STEPS):
        opt.zero_grad()
        loss = (nn.CrossEntropyLoss()(model(gd.tensor(x[s, :half])), gd.tensor(y[s, :half]))
                + nn.CrossEntropyLoss()(model(gd.tensor(x[s, half:])), gd.tensor(y[s, half:])))
        (loss / 2).backward()
        opt.step()
    return model


def case_readme():
    """README's training loop (DataLoader over a DistributedSampler, set_epoch, DDP) equals one
    process training, step by step, on the concatenation of every rank's batch."""
    from gpudl.data import DataLoader, DistributedSampler, TensorDataset
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((50, 5)).astype(np.float32), rng.integers(0, 3, 50)
    dataset = TensorDataset(gd.tensor(x), gd.tensor(y))
    model = DDP(make_model(0))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = DistributedSampler(dataset, shuffle=True, seed=3)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(xb), yb).backward()
            opt.step()
    assert_same_on_every_rank(model.module)
    reference = make_model(0)
    opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    shards = [DistributedSampler(range(50), world, r, shuffle=True, seed=3) for r in range(world)]
    for epoch in range(2):
        for s in shards:
            s.set_epoch(epoch)
        orders = [list(s) for s in shards]
        for start in range(0, len(orders[0]), 4):       # every rank's batch of this step
            index = np.concatenate([order[start:start + 4] for order in orders])
            opt.zero_grad()
            nn.CrossEntropyLoss()(reference(gd.tensor(x[index])), gd.tensor(y[index])).backward()
            opt.step()
    assert_matches(model.module, reference)
    report("readme")


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        gd.manual_seed(3)
        self.body, self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)
        self.never = nn.Linear(4, 2)

    def forward(self, x, head):
        return (self.a if head == 0 else self.b)(self.body(x))


def case_unused():
    """find_unused_parameters: rank 0 uses head a, the others head b; `never` stays None."""
    rank = dist.get_rank()
    ddp = DDP(_TwoHeads(), find_unused_parameters=True)
    x = gd.tensor(np.full((2, 4), rank + 1.0, np.float32))
    ddp(x, 0 if rank == 0 else 1).sum().backward()
    m = ddp.module
    assert m.never.weight.grad is None
    for p in (m.a.weight, m.b.weight, m.body.weight):
        assert p.grad is not None
    assert_same_on_every_rank_grads([m.a.weight, m.b.weight, m.body.weight])
    strict = DDP(_TwoHeads())
    strict(x, 0).sum().backward()              # `b` and `never` get no gradient
    try:
        strict(x, 0)
    except RuntimeError as exc:
        assert "find_unused_parameters" in str(exc) and "never.weight" in str(exc), exc
    else:
        raise AssertionError("an unfinished reduction was not reported")
    report("unused")


def assert_same_on_every_rank_grads(params):
    for p in params:
        gathered = [gd.zeros(p.shape) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, gd.tensor(p.grad.numpy().copy()))
        for g in gathered:
            np.testing.assert_array_equal(g.numpy(), p.grad.numpy())


def case_buffers():
    """BatchNorm statistics: rank 0's are broadcast before each forward."""
    rank = dist.get_rank()
    gd.manual_seed(0)
    ddp = DDP(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    bn = ddp.module[1]
    bn.running_mean.data[...] = rank + 1.0          # statistics diverged between the ranks
    ddp(gd.tensor(np.arange(12, dtype=np.float32).reshape(4, 3)))    # the same batch everywhere
    gathered = [gd.zeros(4) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, gd.tensor(bn.running_mean.numpy().copy()))
    for g in gathered:              # every rank started from rank 0's 1.0, so all agree
        np.testing.assert_array_equal(g.numpy(), bn.running_mean.numpy())
    assert not np.allclose(bn.running_mean.numpy(), 1.0)
    report("buffers")


def case_fit():
    """fit() under the group: ranks train on their shards, logs agree, only rank 0 prints."""
    from gpudl.data import DataLoader, TensorDataset
    from gpudl.train import fit
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 5)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    data = TensorDataset(gd.tensor(x), gd.tensor(y))
    ddp = DDP(make_model(0))
    shown = io.StringIO()                       # the progress bar (tqdm) writes to stderr
    with contextlib.redirect_stderr(shown):
        history = fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1),
                      DataLoader(data, batch_size=5, shuffle=True), epochs=2,
                      val_loader=DataLoader(data, batch_size=16), metrics=["accuracy"],
                      verbose=True)
    if ("Epoch 2/2" in shown.getvalue()) != (rank == 0):
        raise AssertionError(f"rank {rank}: only rank 0 may show progress; it showed "
                             f"{shown.getvalue()[-200:]!r}")
    logs = gd.tensor([history["loss"][-1], history["val_loss"][-1], history["val_accuracy"][-1]],
                     dtype=gd.float64)
    gathered = [gd.zeros(3, dtype=gd.float64) for _ in range(world)]
    dist.all_gather(gathered, logs)
    for g in gathered:
        np.testing.assert_array_equal(g.numpy(), logs.numpy())
    assert_same_on_every_rank(ddp.module)
    with gd.no_grad():                          # val logs cover the whole set once per rank
        full = nn.CrossEntropyLoss()(ddp.module(gd.tensor(x)), gd.tensor(y)).item()
    assert abs(history["val_loss"][-1] - full) < 1e-5, (history["val_loss"][-1], full)
    report("fit")


def case_keras():
    """Keras-style fit on an unwrapped model: fit wraps it for the call, then unwraps;
    ModelCheckpoint writes on rank 0 only, with the module's own keys."""
    from gpudl import autograd, keras
    from gpudl.callbacks import ModelCheckpoint
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = make_model(50 + rank)                        # rank 0's weights win at wrap time
    keras.compile(model, optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    folder = os.environ["GPUDL_TEST_OUT"]
    checkpoint = ModelCheckpoint(os.path.join(folder, f"rank{rank}.safetensors"),
                                 monitor="loss")
    keras.fit(model, x, y, batch_size=4, epochs=2, callbacks=[checkpoint], verbose=0)
    assert_same_on_every_rank(model)
    assert not any(id(p) in autograd._post_accumulate_hooks and
                   autograd._post_accumulate_hooks[id(p)] for p in model.parameters())
    dist.barrier()
    written = sorted(os.listdir(folder))
    assert written == ["rank0.safetensors"], written
    assert set(gd.load(os.path.join(folder, written[0]))) == set(model.state_dict())
    report("keras")


def case_raise():
    """Rank 1 raises; the others are inside an all_reduce that can never complete."""
    _write_pid()
    if dist.get_rank() == 1:
        raise ValueError("deliberate failure on rank 1")
    dist.all_reduce(gd.ones(3))
    time.sleep(30)


def case_die():
    """Rank 1 is killed (SIGKILL: no exception, no MPI_Abort); the others are inside an
    all_reduce that can never complete."""
    _write_pid()
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(gd.ones(3))
    time.sleep(30)


def case_hang():
    """The last rank never joins the all_reduce; the others' timeout (2 s) ends the job."""
    _write_pid()
    if dist.get_rank() == dist.get_world_size() - 1:
        time.sleep(60)
    dist.all_reduce(gd.ones(3))


def _write_pid():
    folder = os.environ.get("GPUDL_TEST_PIDS")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.pid"), "w") as f:
            f.write(f"{os.getpid()} {os.getppid()}")
    dist.barrier()          # every rank's pid is written before any of them fails


def main(cases):
    timeout = float(os.environ.get("GPUDL_TEST_TIMEOUT", "60"))
    hook = sys.excepthook
    dist.init_process_group(backend="mpi", timeout=timeout)
    assert sys.excepthook is not hook                   # uncaught errors now abort every rank
    for case in cases:
        globals()["case_" + case]()
    dist.destroy_process_group()
    assert sys.excepthook is hook and not dist.is_initialized()


if __name__ == "__main__":
    main(sys.argv[1:])
