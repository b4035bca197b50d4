"""gpudl.distributed pieces that need no second process: the launcher's environment, the NCCL id
exchange, DistributedSampler against PyTorch's, bucket assignment, the Reducer's overlap with
backward (on a recording group), and the errors of the public calls."""

import datetime
import socket
import sys
import threading

import numpy as np
import pytest

import gpudl as gd
import gpudl.distributed as dist
from gpudl import nn
from gpudl.data import DistributedSampler as DataDistributedSampler
from gpudl.distributed import backends, rendezvous
from gpudl.distributed.reducer import Reducer, assign_buckets
from gpudl.distributed.sampler import DistributedSampler


# ----------------------------------------------------------------- environment and rendezvous
def test_env_parsing_reads_the_launcher_variables():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
           "MASTER_PORT": "1234"}
    assert rendezvous.from_environ(environ=env) == rendezvous.EnvInfo(3, 8, 1, "node7", 1234)


def test_env_parsing_defaults_and_arguments_win():
    info = rendezvous.from_environ(rank=2, world_size=4, environ={"RANK": "0"})
    assert info == rendezvous.EnvInfo(2, 4, 2, "127.0.0.1", 29500)   # LOCAL_RANK defaults to rank


def test_env_parsing_steps_past_torchruns_own_store():
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "4000",
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    assert rendezvous.from_environ(environ=env).master_port == 4001


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"RANK": "0"}, "WORLD_SIZE is not set"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'x'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "0 <= rank < world_size"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT must be in"),
])
def test_env_parsing_errors_name_the_variable(env, match):
    with pytest.raises(ValueError, match=match):
        rendezvous.from_environ(environ=env)


def test_nccl_id_round_trips_through_bytes_whatever_the_sign():
    uid = tuple(int(v) for v in np.random.default_rng(0).integers(-128, 128, 128))
    payload = rendezvous.encode_id(uid)
    assert len(payload) == rendezvous.ID_BYTES and rendezvous.decode_id(payload) == uid


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_exchange_gives_rank_0s_id_to_every_rank():
    port, world = _free_port(), 3
    uid = rendezvous.encode_id(range(-64, 64))
    got = {}

    def rank(r):
        info = rendezvous.EnvInfo(r, world, r, "127.0.0.1", port)
        got[r] = rendezvous.tcp_exchange(info, uid if r == 0 else None, timeout=20)
    threads = [threading.Thread(target=rank, args=(r,)) for r in (2, 1, 0)]   # clients first
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == {0: uid, 1: uid, 2: uid}


def test_tcp_exchange_times_out_naming_the_rank_and_address():
    info = rendezvous.EnvInfo(1, 2, 1, "127.0.0.1", _free_port())     # nobody listens
    with pytest.raises(TimeoutError, match="rank 1 could not reach rank 0 at 127.0.0.1"):
        rendezvous.tcp_exchange(info, None, timeout=0.3)


# ----------------------------------------------------------------- DistributedSampler
def _torch_indices(n, replicas, rank, shuffle, seed, epoch, drop_last):
    pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler
    sampler = TorchSampler(range(n), num_replicas=replicas, rank=rank, shuffle=shuffle,
                           seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("n, replicas", [(10, 3), (9, 3), (7, 4), (2, 5), (23, 2), (1000, 3)])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("seed, epoch", [(5, 3), (0, 0), (2**33 + 7, 11)])
def test_sampler_gives_each_rank_pytorchs_indices(n, replicas, drop_last, shuffle, seed, epoch):
    for rank in range(replicas):
        expected = _torch_indices(n, replicas, rank, shuffle, seed, epoch, drop_last)
        ours = DistributedSampler(range(n), replicas, rank, shuffle=shuffle, seed=seed,
                                  drop_last=drop_last)
        ours.set_epoch(epoch)
        assert list(ours) == expected
        assert len(ours) == len(expected)


def test_one_sampler_follows_pytorchs_through_epochs_and_negative_seeds():
    for seed in (-3, 123):
        ours = DistributedSampler(range(41), 4, 3, shuffle=True, seed=seed, drop_last=True)
        for epoch in (0, 1, 2, 7):
            ours.set_epoch(epoch)
            assert list(ours) == _torch_indices(41, 4, 3, True, seed, epoch, True)


def test_sampler_chunks_and_wide_draws_are_torchs():
    """From ``WIDE_DRAWS_FROM`` (214,748,364) on, torch.randperm shuffles "inside-out" with
    64-bit draws, random64(): two 32-bit draws, the first the high half. A permutation that long
    takes 3.4 GB and minutes to check against torch (done once, notes/audit17.md); here the
    draws are checked against torch's random64 through torch.randint over a range of 2**40
    (which draws with random64), the compiled inside-out loop against ATen's loop written out
    in Python, and the shuffle across the 2**20-draw chunks against torch.randperm."""
    torch = pytest.importorskip("torch")
    from gpudl.distributed import sampler
    from gpudl.kernels.permutation import inside_out
    draws = sampler.torch_draws(np.random.RandomState(11), 7, wide=True)
    expected = torch.randint(0, 2**40, (7,), generator=torch.Generator().manual_seed(11))
    assert (draws % 2**40).tolist() == expected.tolist()
    draws = sampler.torch_draws(np.random.RandomState(2), 300, wide=True)
    expected = list(range(300))
    for i in range(300):                     # ATen's randperm_cpu, n >= WIDE_DRAWS_FROM
        z = int(draws[i]) % (i + 1)
        expected[i] = expected[z]
        expected[z] = i
    order = np.arange(300)
    inside_out(order, draws[:120], 0)
    inside_out(order, draws[120:], 120)
    assert order.tolist() == expected
    n = sampler._CHUNK + 3
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(5)).numpy()
    np.testing.assert_array_equal(sampler.torch_randperm(n, 5), expected)


def test_sampler_shuffles_per_epoch_the_same_on_every_rank():
    shards = [DistributedSampler(range(20), 4, r, seed=1) for r in range(4)]
    epoch0 = [list(s) for s in shards]
    assert sorted(sum(epoch0, [])) == list(range(20))          # a partition of the data set
    for s in shards:
        s.set_epoch(1)
    assert [list(s) for s in shards] != epoch0
    again = DistributedSampler(range(20), 4, 2, seed=1)
    assert list(again) == epoch0[2]


def test_sampler_is_reexported_by_gpudl_data_and_checks_arguments():
    assert DataDistributedSampler is DistributedSampler
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="rank must be an int"):
        DistributedSampler(range(4), num_replicas=2, rank=1.0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(range(4))


# ----------------------------------------------------------------- buckets and the Reducer
def test_buckets_follow_reverse_registration_order_under_the_cap():
    params = [nn.Parameter(np.zeros(n, dtype)) for n, dtype in
              [(10, np.float32), (10, np.float32), (30, np.float32), (5, np.float64),
               (5, np.float32), (2, np.float32)]]
    # 4-byte floats, cap 80 bytes: [5, 4] (28 B); float64 alone; 30 floats exceed the cap alone
    assert assign_buckets(params, 80) == [[5, 4], [3], [2], [1, 0]]
    assert assign_buckets(params, 10**9) == [[5, 4], [3], [2, 1, 0]]


class RecordingGroup:
    """A world of one that records each launch and which gradients existed at that moment."""

    rank, world_size, timeout = 0, 1, 5.0

    def __init__(self, params):
        self.params, self.events = params, []

    def all_reduce(self, array, op):
        self.events.append((op, array.size, [p.grad is not None for p in self.params]))
        return backends.Work(self, "all_reduce", lambda: True)


def _mlp():
    gd.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 2))


def test_reducer_launches_buckets_during_backward_in_index_order():
    model = _mlp()
    params = list(model.parameters())
    group = RecordingGroup(params)
    reducer = Reducer(params, group, bucket_cap_mb=64 * 64 * 4 / 2**20)   # one big weight each
    x = gd.tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    out = model(x)
    reducer.prepare_for_backward(out)
    out.sum().backward()
    assert reducer.launch_log == list(range(len(reducer.buckets))) and len(reducer.buckets) >= 3
    first_launch = group.events[0]
    assert first_launch[0] == backends.AVG
    assert not first_launch[2][0], "the first bucket waited for the whole backward"
    reducer.remove()


def test_reducer_with_a_world_of_one_leaves_gradients_unchanged():
    model, reference = _mlp(), _mlp()
    params = list(model.parameters())
    reducer = Reducer(params, RecordingGroup(params), bucket_cap_mb=0.01)
    x = gd.tensor(np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32))
    out = model(x)
    reducer.prepare_for_backward(out)
    out.square().sum().backward()
    reference(x).square().sum().backward()
    for p, q in zip(params, reference.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
    reducer.remove()


def test_reducer_ignores_backward_of_unsynced_forward():
    model = _mlp()
    params = list(model.parameters())
    group = RecordingGroup(params)
    reducer = Reducer(params, group)
    reducer.skip_backward()
    model(gd.ones((1, 4))).sum().backward()
    assert group.events == []
    reducer.remove()


# ----------------------------------------------------------------- the public calls' errors
def test_calls_before_init_say_to_initialize():
    assert not dist.is_initialized()
    for call in (dist.get_rank, dist.get_world_size, dist.barrier,
                 lambda: dist.all_reduce(gd.ones(2))):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    from gpudl.nn.parallel import DistributedDataParallel
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"backend": "gloo"}, ValueError, "backend must be one of"),
    ({"backend": "mpi", "init_method": "tcp://10.0.0.1:23456"}, ValueError, "init_method"),
    ({"backend": "mpi", "timeout": -1}, ValueError, "timeout must be a positive"),
])
def test_init_process_group_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        dist.init_process_group(**kwargs)
    assert not dist.is_initialized()


class _Joined:
    """Stands in for a backend: records how init_process_group made it."""

    rank, world_size, name = 0, 1, "fake"

    def __init__(self, *args, **kwargs):
        self.args = args

    def install_abort_on_error(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("cuda, picked", [(True, "nccl"), (False, "mpi")])
def test_backend_none_picks_nccl_on_the_cuda_path_and_mpi_otherwise(monkeypatch, cuda, picked):
    made = {}
    monkeypatch.setattr(dist._device, "cuda_available", lambda: cuda)
    monkeypatch.setattr(dist._device, "SIMULATOR", False)
    monkeypatch.setattr(dist._backends, "MPIBackend",
                        lambda seconds: made.setdefault("mpi", _Joined(seconds)))
    monkeypatch.setattr(dist, "_nccl_group", lambda rank, world_size, seconds:
                        made.setdefault("nccl", _Joined(rank, world_size, seconds)))
    dist.init_process_group(timeout=datetime.timedelta(seconds=7))
    try:
        assert list(made) == [picked] and dist._state["group"] is made[picked]
        assert made[picked].args[-1] == 7.0
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match="needs the package 'mpi4py'.*pip install mpich mpi4py"):
        dist.init_process_group(backend="mpi")
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match="needs the package 'cupy'"):
        dist.init_process_group(backend="nccl", rank=0, world_size=1)
    assert not dist.is_initialized()


# ----------------------------------------------------------------- fit's duties per rank
class TwoRankGroup(RecordingGroup):
    """Rank 1 of a pretend world of 2: collectives complete at once and change nothing."""

    rank, world_size = 1, 2

    def __init__(self):
        super().__init__([])

    def broadcast(self, array, src):
        return backends.Work(self, "broadcast", lambda: True)


def test_fit_context_shards_like_the_sampler_and_leaves_rank_0s_duties(monkeypatch):
    from gpudl.callbacks import EarlyStopping, ModelCheckpoint
    from gpudl.data import DataLoader, TensorDataset
    from gpudl.distributed.training import FitContext
    monkeypatch.setitem(dist._state, "group", TwoRankGroup())
    model = nn.Linear(2, 1)
    stop = EarlyStopping(patience=1)
    run = FitContext(model, [ModelCheckpoint("never.safetensors"), stop], verbose=True)
    assert run.model.module is model and run.callback_model is model and run.eval_model is model
    assert run.callbacks == [stop] and run.verbose is False
    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    loader = DataLoader(TensorDataset(x, x[:, :1]), batch_size=4, shuffle=True)
    sampler = DistributedSampler(range(11), 2, 1, shuffle=True)
    sampler.set_epoch(3)
    rows = np.concatenate([xb.numpy() for xb, _ in run.train_loader(loader, 3)])
    np.testing.assert_array_equal(rows, x[list(sampler)])
    rows = np.concatenate([xb.numpy() for xb, _ in run.eval_loader(loader)])
    np.testing.assert_array_equal(rows, x[1::2])                  # unpadded: every sample once
    with pytest.raises(TypeError, match="train_loader must be a gpudl DataLoader"):
        run.train_loader([(x, x)], 0)
    run.close()
    from gpudl import autograd
    assert not any(autograd._post_accumulate_hooks.get(id(p)) for p in model.parameters())


def test_a_dropped_reducer_is_freed_and_its_hooks_do_nothing():
    import gc
    import weakref
    model = _mlp()
    params = list(model.parameters())
    group = RecordingGroup(params)
    reducer = Reducer(params, group)
    alive = weakref.ref(reducer)
    del reducer
    gc.collect()
    assert alive() is None
    model(gd.ones((1, 4))).sum().backward()         # the orphaned hooks run and do nothing
    assert group.events == []


def test_cupy_without_nccl_is_told_apart_from_no_cupy(monkeypatch):
    import types
    fake_cupy = types.ModuleType("cupy")
    fake_cuda = types.ModuleType("cupy.cuda")
    fake_cupy.cuda = fake_cuda
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake_cuda)
    monkeypatch.delitem(sys.modules, "cupy.cuda.nccl", raising=False)   # a real one, on a GPU
    with pytest.raises(ImportError, match="could not load NCCL: pip install nvidia-nccl-cu12"):
        dist.init_process_group(backend="nccl", rank=0, world_size=1)
    assert not dist.is_nccl_available()


@pytest.mark.parametrize("call, error, match", [
    (lambda t: dist.all_reduce(t, op="sum"), TypeError, "op must be a gpudl.distributed.ReduceOp"),
    (lambda t: dist.all_reduce(gd.tensor([1, 2]), op=dist.ReduceOp.AVG), TypeError,
     "AVG needs a floating-point tensor"),
    (lambda t: dist.all_reduce([1.0]), TypeError, "tensor must be a gpudl Tensor, got list"),
    (lambda t: dist.broadcast(t, src=2), ValueError, r"src must be a rank in 0\.\.1, got 2"),
    (lambda t: dist.all_gather([gd.zeros(3)], t), ValueError,
     "tensor_list must be a list of 2 tensors .one per rank., got a list of 1"),
    (lambda t: dist.all_gather(gd.zeros(3), t), ValueError, "got Tensor"),
    (lambda t: dist.all_gather([gd.zeros(3), gd.zeros(4)], t), ValueError,
     r"shape \(3,\) and dtype float32, got \(4,\)"),
    (lambda t: dist.reduce_scatter(t, [t]), ValueError, "input_list must be a list of 2"),
    (lambda t: dist.all_reduce(t, group=object()), ValueError, "only the default process group"),
    (lambda t: dist.init_process_group("mpi"), RuntimeError, "initialize the default process "
     "group twice"),
])
def test_refused_collectives_name_the_argument_and_change_nothing(monkeypatch, call, error, match):
    monkeypatch.setitem(dist._state, "group", TwoRankGroup())
    t = gd.tensor([1.0, 2.0, 3.0])
    with pytest.raises(error, match=match):
        call(t)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0, 3.0])
