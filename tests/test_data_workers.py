"""DataLoader worker processes (2 workers, tiny data), batches that never alias the data set,
errors that name the index, pin_memory: each against torch.utils.data where it has an answer."""

import gc
import multiprocessing
import os
import random as pyrandom

import numpy as np
import pytest
import torch
import torch.utils.data as tdata

import gpudl as gd
from gpudl import workers
from gpudl.data import DataLoader, Dataset, TensorDataset, get_worker_info


class Probe(Dataset):
    """Each sample says which worker made it and what its generators gave first."""

    def __init__(self, n=8, fail_at=None, exit_at=None):
        self.n, self.fail_at, self.exit_at = n, fail_at, exit_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyError(f"no sample {i}")
        if i == self.exit_at:
            os._exit(3)
        info = get_worker_info()
        return {"i": np.float32(i), "pid": os.getpid(), "worker": -1 if info is None else info.id,
                "seed": -1 if info is None else info.seed,
                "numpy": np.random.randint(2 ** 31), "python": pyrandom.randrange(2 ** 31),
                "gpudl": gd.randint(0, 2 ** 31, (1,)).item()}


def _cpu_dataset(*arrays):
    """A TensorDataset on the cpu, where workers load data: one in GPU memory is gathered in the
    main process, which would leave the workers untested on a GPU machine."""
    return TensorDataset(*(gd.tensor(a, device="cpu") for a in arrays))


@pytest.fixture(autouse=True)
def _no_leaked_workers():
    yield
    gc.collect()
    assert multiprocessing.active_children() == []


def test_workers_give_the_same_batches_in_order(rng):
    x, y = rng.standard_normal((11, 3)).astype(np.float32), rng.integers(0, 5, 11)
    serial = list(DataLoader(_cpu_dataset(x, y), batch_size=3))
    parallel = list(DataLoader(_cpu_dataset(x, y), batch_size=3, num_workers=2,
                               prefetch_factor=1))
    theirs = list(tdata.DataLoader(tdata.TensorDataset(torch.tensor(x), torch.tensor(y)),
                                   batch_size=3, num_workers=2))
    assert len(serial) == len(parallel) == len(theirs) == 4
    for (xs, ys), (xp, yp), (xt, yt) in zip(serial, parallel, theirs):
        np.testing.assert_array_equal(xp.numpy(), xs.numpy())
        np.testing.assert_array_equal(xp.numpy(), xt.numpy())
        np.testing.assert_array_equal(yp.numpy(), yt.numpy())
        assert xp.device == xs.device     # the data set tensors' device, as without workers


def test_worker_seeds_are_derived_as_torch_derives_them():
    for base_seed in (0, 1, 2 ** 40 + 7, 2 ** 63 - 2):
        for worker_id in (0, 1, 5):
            assert workers.numpy_seed(base_seed, worker_id) == \
                tdata._utils.worker._generate_state(base_seed, worker_id)
    started = []
    loader = DataLoader(Probe(), batch_size=2, num_workers=2,
                        worker_init_fn=lambda wid: started.append(wid))
    batches = list(loader)
    firsts = {}
    for batch in batches:
        worker = int(batch["worker"][0])
        firsts.setdefault(worker, batch)
    assert sorted(firsts) == [0, 1]
    base = int(firsts[0]["seed"][0])
    for worker, batch in firsts.items():
        seed = int(batch["seed"][0])
        assert seed == base + worker
        np.random.seed(workers.numpy_seed(base, worker))
        assert int(batch["numpy"][0]) == np.random.randint(2 ** 31)
        assert int(batch["python"][0]) == pyrandom.Random(seed).randrange(2 ** 31)
        gd.manual_seed(seed)              # a worker makes cpu tensors whatever the device
        assert int(batch["gpudl"][0]) == gd.randint(0, 2 ** 31, (1,), device="cpu").item()
    assert started == []                       # worker_init_fn ran in the workers, not here


def test_base_seed_follows_the_loader_generator():
    def seeds(seed):
        return {int(b["seed"][0]) for b in DataLoader(Probe(4), batch_size=2, num_workers=2,
                                                      seed=seed)}
    assert seeds(5) == seeds(5) != seeds(6)


def test_worker_init_fn_sees_worker_info():
    def init(worker_id):
        info = get_worker_info()
        assert info.id == worker_id and info.num_workers == 2 and isinstance(info.dataset, Probe)
        np.random.seed(100 + worker_id)
    batches = list(DataLoader(Probe(4), batch_size=1, num_workers=2, worker_init_fn=init))
    first = {int(b["worker"][0]): int(b["numpy"][0]) for b in batches[:2]}
    assert first == {w: np.random.RandomState(100 + w).randint(2 ** 31) for w in (0, 1)}


def test_workers_seed_without_touching_the_parents_device_dropout_states(monkeypatch):
    """A forked worker must not reseed the parent's cuda dropout states (CUDA in a forked
    child fails): here states that raise when written stand for them."""
    class DeviceOnly:
        def __setitem__(self, key, value):
            raise RuntimeError("a forked worker wrote the parent's device states")
    monkeypatch.setattr(gd.random, "_dropout_states", DeviceOnly())
    batches = list(DataLoader(Probe(4), batch_size=2, num_workers=2))
    assert sorted(int(b["worker"][0]) for b in batches) == [0, 1]


def test_persistent_workers_survive_epochs_and_others_do_not():
    def pids(loader):
        return {int(p) for b in loader for p in b["pid"]}
    persistent = DataLoader(Probe(4), batch_size=2, num_workers=2, persistent_workers=True)
    first = pids(persistent)
    assert len(first) == 2 and os.getpid() not in first and pids(persistent) == first
    persistent._pool.close()
    fresh = DataLoader(Probe(4), batch_size=2, num_workers=2)
    assert pids(fresh).isdisjoint(pids(fresh))


def test_a_worker_exception_is_reraised_with_its_type_naming_the_index():
    loader = DataLoader(Probe(6, fail_at=3), batch_size=2, num_workers=2)
    with pytest.raises(KeyError, match=r"no sample 3.*dataset\[3\].*worker 1"):
        list(loader)


def test_a_worker_init_fn_exception_is_reraised():
    def init(worker_id):
        raise ValueError(f"init failed in {worker_id}")
    with pytest.raises(ValueError, match="init failed in 0"):
        list(DataLoader(Probe(4), batch_size=2, num_workers=2, worker_init_fn=init))


def test_a_dead_worker_is_reported():
    with pytest.raises(RuntimeError, match="exited unexpectedly.*exit code 3"):
        list(DataLoader(Probe(6, exit_at=2), batch_size=1, num_workers=2))


def test_abandoning_an_epoch_or_ctrl_c_leaves_no_process():
    loader = DataLoader(Probe(8), batch_size=1, num_workers=2)
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            raise KeyboardInterrupt
    it = iter(loader)
    next(it)
    assert len(multiprocessing.active_children()) == 2
    del it


def test_dataset_error_in_the_main_process_names_the_index():
    with pytest.raises(KeyError, match=r"no sample 5.*dataset\[5\]"):
        list(DataLoader(Probe(8, fail_at=5), batch_size=4))
    with pytest.raises(KeyError, match=r"dataset\[5\]"):
        list(DataLoader(Probe(8, fail_at=5), batch_size=None))


class _Strict(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)


class _Raises(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise _Strict(7, "detail")


def test_an_exception_that_cannot_take_a_message_becomes_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"_Strict: .*detail.*dataset\[0\]"):
        list(DataLoader(_Raises(), batch_size=2))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_editing_batches_in_place_leaves_the_dataset_alone(rng, num_workers, shuffle):
    x, y = rng.standard_normal((10, 2)).astype(np.float32), np.arange(10)
    xs, ys = gd.tensor(x, device="cpu"), gd.tensor(y, device="cpu")
    loader = DataLoader(TensorDataset(xs, ys), batch_size=4, shuffle=shuffle,
                        num_workers=num_workers)
    for _ in range(2):
        for xb, yb in loader:
            xb.sub_(1)
            yb.mul_(0)
    np.testing.assert_array_equal(xs.numpy(), x)
    np.testing.assert_array_equal(ys.numpy(), y)


def test_pin_memory_keeps_values_and_structure(rng):
    x, y = rng.standard_normal((6, 2)).astype(np.float32), np.arange(6)
    for num_workers in (0, 2):
        pinned = list(DataLoader(_cpu_dataset(x, y), batch_size=4, pin_memory=True,
                                 num_workers=num_workers))
        assert isinstance(pinned[0], list) and len(pinned) == 2       # as torch
        np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in pinned]), x)


def test_custom_collate_fn_runs_in_the_workers():
    def collate(samples):
        return {"n": len(samples), "worker": get_worker_info().id}
    batches = list(DataLoader(Probe(6), batch_size=2, num_workers=2, collate_fn=collate))
    assert [b["n"] for b in batches] == [2, 2, 2] and [b["worker"] for b in batches] == [0, 1, 0]


def _stream_class(module):
    """An IterableDataset of module's (gpudl.data or torch's) that shards itself by worker, with
    uneven shards (worker 0 reads 3 more samples than worker 1 of 2)."""
    class Shards(module.IterableDataset):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            info = module.get_worker_info()
            worker, count = (0, 1) if info is None else (info.id, info.num_workers)
            stop = self.n if worker == 0 else self.n - 3
            return ({"i": float(i), "w": worker} for i in range(worker, stop, count))
    return Shards


@pytest.mark.parametrize("num_workers, options", [
    (2, dict(batch_size=2)), (3, dict(batch_size=2, drop_last=True)),
    (2, dict(batch_size=None)), (2, dict(batch_size=3, prefetch_factor=1))])
def test_a_stream_loads_in_workers_in_torchs_order(num_workers, options):
    """Each worker iterates its own copy (sharded by get_worker_info()); batches come one from
    each worker in turn, a worker that ran out skipped: the same batches, in the same order,
    as torch's DataLoader."""
    def plain(batch):       # batch_size=None: the samples themselves, numbers kept numbers
        return [v.tolist() if hasattr(v, "tolist") else v for v in (batch["i"], batch["w"])]
    got = [plain(b) for b in DataLoader(_stream_class(gd.data)(13), num_workers=num_workers,
                                        **options)]
    want = [plain(b) for b in tdata.DataLoader(_stream_class(tdata)(13),
                                               num_workers=num_workers, **options)]
    assert got == want and len({str(w) for _, w in got}) > 1     # both workers' batches


def test_a_stream_in_persistent_workers_starts_a_new_pass_each_epoch():
    loader = DataLoader(_stream_class(gd.data)(7), batch_size=2, num_workers=2,
                        persistent_workers=True)
    first, second = ([b["i"].tolist() for b in loader] for _ in range(2))
    assert first == second and sorted(sum(first, [])) == [float(i) for i in range(7)
                                                           if i % 2 == 0 or i < 4]


def test_a_stream_worker_exception_is_reraised_with_its_type():
    class Failing(gd.data.IterableDataset):
        def __iter__(self):
            yield 1.0
            raise KeyError("the stream broke")

    with pytest.raises(KeyError, match="the stream broke"):
        list(DataLoader(Failing(), batch_size=1, num_workers=2))


@pytest.mark.parametrize("options, pattern", [
    ({"num_workers": -1}, "num_workers must be a non-negative int"),
    ({"prefetch_factor": 2}, "need num_workers > 0"),
    ({"persistent_workers": True}, "need num_workers > 0"),
    ({"num_workers": 1, "prefetch_factor": 0}, "prefetch_factor must be a positive"),
    ({"timeout": -1}, "timeout must be a non-negative"),
])
def test_bad_worker_options_are_refused(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        DataLoader(Probe(), **options)


_CHILD = """
import multiprocessing, signal, sys, time
# A program started from a terminal: a CI shell that starts jobs in the background hands its
# children SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
import numpy as np
from gpudl import from_numpy
from gpudl.data import DataLoader, TensorDataset
# the data on the cpu, where workers load it (a cuda TensorDataset is gathered in the main process)
loader = DataLoader(TensorDataset(from_numpy(np.zeros((8, 2), np.float32))), batch_size=1,
                    num_workers=2)
batches = iter(loader)
next(batches)
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(60)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()       # a zombie has exited
    except FileNotFoundError:
        return False


def _wait_gone(pids, seconds=20.0):
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_workers_end_with_their_main_process(how):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGKILL of the main
    process alone: no worker outlives it."""
    import signal
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=root)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        said = child.stdout.readline()
        pids = [int(p) for p in said.split()]
        if len(pids) != 2:
            os.killpg(child.pid, signal.SIGKILL)
            _, stderr = child.communicate(timeout=30)
            raise AssertionError(f"the child printed {said!r}, not its 2 workers' pids; its "
                                 f"stderr:\n{stderr[-3000:]}")
        if how == "ctrl-c":
            os.killpg(child.pid, signal.SIGINT)
        else:
            child.kill()
        child.wait(timeout=30)
        assert _wait_gone(pids) == []
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()


def test_spawned_workers_work_too(rng):
    """multiprocessing_context='spawn': the loader and its data set travel pickled."""
    x = rng.standard_normal((6, 2)).astype(np.float32)
    batches = list(DataLoader(_cpu_dataset(x), batch_size=4, num_workers=2,
                              multiprocessing_context="spawn"))
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
