"""The NCCL backend's own logic without a GPU, against a stand-in for CuPy and ``cupy.cuda.nccl``.

The stand-in has CuPy's names and call signatures (``NcclCommunicator(ndev, commId, rank)``,
``allReduce(sendbuf, recvbuf, count, datatype, op, stream)``, ... as in CuPy's
``cupy_backends/cuda/libs/nccl.pyx``, integer arguments only, as its Cython signatures take) and
NCCL's enum values; each call checks that the datatype code matches the array at the address and
that the count fits, then acts as a world of one (a copy). Streams and events are logged, so the
tests see what runs on which stream after what. Host arrays stand in for device arrays.
What this cannot show, a GPU run shows (tests/distributed/test_distributed_nccl.py).
"""

import gc
import operator
import sys
import types
import weakref

import numpy as np
import pytest

import gpudl as gd
import gpudl.distributed as dist
from gpudl import nn, optim
from gpudl.distributed import backends
from gpudl.nn.parallel import DistributedDataParallel

# host arrays cannot stand in for CuPy's where gpudl's tensors are CuPy arrays
pytestmark = pytest.mark.skipif(
    gd.backend._cupy is not None,
    reason="a stand-in for CuPy with host arrays, for machines without a GPU; on a GPU the real "
           "NCCL tests run (tests/distributed/test_distributed_nccl.py)")

# NCCL's ncclRedOp_t and ncclDataType_t values (nccl.h), which CuPy exports under these names
OPS = {"NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3, "NCCL_AVG": 4}
TYPES = {"NCCL_INT8": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_UINT32": 3, "NCCL_INT64": 4,
         "NCCL_UINT64": 5, "NCCL_FLOAT16": 6, "NCCL_FLOAT32": 7, "NCCL_FLOAT64": 8,
         "NCCL_BFLOAT16": 9}
DTYPE_OF_CODE = {0: {"int8"}, 1: {"uint8", "bool"}, 2: {"int32"}, 3: {"uint32"}, 4: {"int64"},
                 5: {"uint64"}, 6: {"float16"}, 7: {"float32"}, 8: {"float64"}, 9: {"bfloat16"}}


class DeviceArray(np.ndarray):
    """What ``cupy.asarray`` returns here: host memory marked as the device's."""

    def get(self):
        return np.asarray(self).copy()


class FakeCuda:
    """cupy.cuda and cupy.cuda.nccl, for one process, with a log of what ran where."""

    def __init__(self, version=22703, devices=2, bytes_id=False):
        self.log, self.hold, self.version = [], False, version
        self.bytes_id = bytes_id       # CuPy 14's NCCL id: bytes, not a tuple of ints
        self.arrays = weakref.WeakValueDictionary()        # address -> array, not kept alive
        self.null = self.Stream(self, ptr=0)
        self.current = [self.null]
        self.devices, self.used_device, self.comms = devices, None, []

    class Event:
        def __init__(self, cuda, stream):
            self.cuda, self.stream = cuda, stream

        @property
        def done(self):
            return not (self.cuda.hold and self.stream.ptr != 0)

    class Stream:
        count = 0

        def __init__(self, cuda, ptr=None, non_blocking=False):
            FakeCuda.Stream.count += 1
            self.cuda, self.non_blocking = cuda, non_blocking
            self.ptr = 0x1000 + FakeCuda.Stream.count if ptr is None else ptr

        def record(self, event=None):
            event = FakeCuda.Event(self.cuda, self)
            self.cuda.log.append(("record", self.ptr, id(event)))
            return event

        def wait_event(self, event):
            self.cuda.log.append(("wait", self.ptr, id(event)))

        def synchronize(self):
            self.cuda.log.append(("synchronize", self.ptr))

        def __enter__(self):
            self.cuda.current.append(self)

        def __exit__(self, *exc):
            self.cuda.current.pop()

    def modules(self):
        cuda = self
        cupy = types.ModuleType("cupy")
        cupy.zeros, cupy.float32 = np.zeros, np.float32
        cupy.asarray = lambda a: np.array(a).view(DeviceArray)
        cupy_cuda = types.ModuleType("cupy.cuda")
        cupy.cuda = cupy_cuda

        class Device:
            def __init__(self, index):
                self.index = operator.index(index)

            def use(self):
                cuda.used_device = self.index

        cupy_cuda.Device = Device
        cupy_cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: cuda.devices)
        cupy_cuda.Stream = lambda null=False, non_blocking=False: FakeCuda.Stream(
            cuda, non_blocking=non_blocking)
        cupy_cuda.get_current_stream = lambda: cuda.current[-1]
        nccl = types.ModuleType("cupy.cuda.nccl")
        nccl.available = True
        nccl.__dict__.update(OPS)
        nccl.__dict__.update(TYPES)
        nccl.get_version = lambda: cuda.version
        unique_id = np.random.default_rng(0).integers(-128, 128, 128).astype(np.int8)
        nccl.get_unique_id = lambda: (unique_id.tobytes() if cuda.bytes_id else
                                      tuple(int(v) for v in unique_id))
        nccl.NcclCommunicator = lambda ndev, commId, rank: FakeCommunicator(cuda, ndev, commId,
                                                                             rank)
        cupy_cuda.nccl = nccl
        return {"cupy": cupy, "cupy.cuda": cupy_cuda, "cupy.cuda.nccl": nccl}

    def pointer(self, a):
        """What ``a.data.ptr`` is for a CuPy array; remembers the array behind the address."""
        assert a.flags.c_contiguous
        ptr = a.__array_interface__["data"][0]
        self.arrays[ptr] = a
        return ptr


class FakeCommunicator:
    def __init__(self, cuda, ndev, commId, rank):
        ndev, rank = operator.index(ndev), operator.index(rank)
        if cuda.bytes_id:
            if not isinstance(commId, bytes) or len(commId) != 128:
                raise TypeError("Argument 'commId' has incorrect type (expected bytes)")
            commId = tuple(int(v) for v in np.frombuffer(commId, dtype=np.int8))
        elif not isinstance(commId, tuple) or len(commId) != 128 or \
                not all(-128 <= operator.index(c) < 128 for c in commId):
            raise TypeError("commId must be a tuple of 128 chars, as get_unique_id() returns")
        assert commId == tuple(int(v) for v in np.random.default_rng(0).integers(-128, 128, 128))
        assert ndev == 1 and rank == 0, "a world of one"
        self.cuda, self.aborted, self.destroyed = cuda, False, False
        cuda.comms.append(self)

    def _call(self, name, sendbuf, recvbuf, count, datatype, op, stream):
        sendbuf, recvbuf, count, datatype, stream = (
            operator.index(v) for v in (sendbuf, recvbuf, count, datatype, stream))
        if op is not None:
            assert operator.index(op) in OPS.values(), op
        assert stream == self.cuda.current[-1].ptr, "NCCL launched on a stream not made current"
        send, recv = self.cuda.arrays[sendbuf], self.cuda.arrays[recvbuf]
        for a in (send, recv):
            assert a.dtype.name in DTYPE_OF_CODE[datatype], (a.dtype, datatype)
            assert count <= a.size, (count, a.size)
        recv.reshape(-1)[:count] = send.reshape(-1)[:count]     # a world of one
        self.cuda.log.append(("nccl", name, stream, count, datatype, op))

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        self._call("allReduce", sendbuf, recvbuf, count, datatype, op, stream)

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        assert operator.index(root) == 0
        self._call("broadcast", sendbuff, recvbuff, count, datatype, None, stream)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        self._call("allGather", sendbuf, recvbuf, count, datatype, None, stream)

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        self._call("reduceScatter", sendbuf, recvbuf, recvcount, datatype, op, stream)

    def abort(self):
        self.aborted = True

    def destroy(self):
        self.destroyed = True


@pytest.fixture
def fake(monkeypatch):
    cuda = FakeCuda()
    for name, module in cuda.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backends, "_on_device", lambda a: isinstance(a, np.ndarray))
    monkeypatch.setattr(backends, "_pointer", cuda.pointer)
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    yield cuda
    if dist.is_initialized():
        dist.destroy_process_group()


def _calls(cuda):
    return [entry for entry in cuda.log if entry[0] == "nccl"]


def test_a_world_of_one_joins_on_the_local_ranks_device(fake):
    dist.init_process_group("nccl", rank=0, world_size=1)
    group = dist._state["group"]
    assert (dist.get_backend(), dist.get_rank(), dist.get_world_size()) == ("nccl", 0, 1)
    assert fake.used_device == 3 % fake.devices                 # LOCAL_RANK, modulo the GPUs
    assert group.stream.non_blocking and group.stream.ptr != 0
    dist.destroy_process_group()
    assert fake.comms[0].destroyed and ("synchronize", group.stream.ptr) in fake.log


def test_cupy_14s_bytes_id_reaches_the_communicator_unchanged(fake):
    fake.bytes_id = True
    dist.init_process_group("nccl", rank=0, world_size=1)
    assert len(fake.comms) == 1
    dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32])
def test_collectives_pass_cupys_arguments_and_order_the_streams(fake, dtype):
    dist.init_process_group("nccl", rank=0, world_size=1)
    side = dist._state["group"].stream.ptr
    values = np.arange(6).reshape(2, 3).astype(dtype)
    ops = [dist.ReduceOp.SUM, dist.ReduceOp.MAX, dist.ReduceOp.MIN]
    if np.dtype(dtype).kind == "f":
        ops.append(dist.ReduceOp.AVG)
    for op in ops:
        t = gd.tensor(values)
        dist.all_reduce(t, op=op)
        np.testing.assert_array_equal(t.numpy(), values)
    t = gd.tensor(values)
    dist.broadcast(t, src=0)
    gathered = [gd.zeros((2, 3), dtype=t.dtype)]
    dist.all_gather(gathered, gd.tensor(values))
    out = gd.zeros((2, 3), dtype=t.dtype)
    dist.reduce_scatter(out, [gd.tensor(values)])
    for result in (t, gathered[0], out):
        np.testing.assert_array_equal(result.numpy(), values)
    calls = _calls(fake)
    assert [c[1] for c in calls] == ["allReduce"] * len(ops) + ["broadcast", "allGather",
                                                                 "reduceScatter"]
    code = TYPES["NCCL_" + np.dtype(dtype).name.upper()]
    assert all(c[2] == side and c[3] == 6 and c[4] == code for c in calls)
    assert [c[5] for c in calls[:len(ops)]] == [0, 2, 3, 4][:len(ops)]    # SUM MAX MIN AVG
    # each launch: the side stream waits for the null stream's work, NCCL runs there, and the
    # null stream waits for the side stream before the caller sees the result
    log = [entry for entry in fake.log if entry[0] != "synchronize"]
    for i, entry in enumerate(log):
        if entry[0] == "nccl":
            assert log[i - 2][:2] == ("record", 0) and log[i - 1] == ("wait", side, log[i - 2][2])
            assert log[i + 1][:2] == ("record", side)
            assert log[i + 2] == ("wait", 0, log[i + 1][2])


def test_avg_is_a_sum_and_a_division_before_nccl_2_10(fake):
    fake.version = 20907
    dist.init_process_group("nccl", rank=0, world_size=1)
    t = gd.tensor([2.0, 4.0])
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    assert _calls(fake)[-1][5] == OPS["NCCL_SUM"]
    np.testing.assert_array_equal(t.numpy(), [2.0, 4.0])


def test_bfloat16_goes_as_nccls_bfloat16(fake):
    dist.init_process_group("nccl", rank=0, world_size=1)
    t = gd.tensor([1.5, -2.0], dtype=gd.bfloat16)
    dist.all_reduce(t)
    assert _calls(fake)[-1][4] == TYPES["NCCL_BFLOAT16"]


def test_ddp_over_nccl_reduces_each_bucket_on_the_side_stream_and_trains_as_one_process(fake):
    dist.init_process_group("nccl", rank=0, world_size=1)
    side = dist._state["group"].stream.ptr

    def model():
        gd.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                             nn.Linear(32, 3))
    ddp, plain = DistributedDataParallel(model(), bucket_cap_mb=0.004), model()
    buckets = ddp.reducer.buckets
    assert len(buckets) >= 3
    for m in (ddp, plain):
        rng = np.random.default_rng(1)
        opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            m(gd.tensor(rng.standard_normal((8, 6)).astype(np.float32))).square().mean().backward()
            opt.step()
    for p, q in zip(ddp.module.parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    calls = _calls(fake)
    sizes = [int(b.offsets[-1]) for b in buckets]
    assert [(c[1], c[2], c[3], c[4], c[5]) for c in calls] == \
        [("allReduce", side, n, TYPES["NCCL_FLOAT32"], OPS["NCCL_AVG"]) for n in sizes] * 3


def test_an_async_collectives_temporaries_live_until_it_completes(fake):
    dist.init_process_group("nccl", rank=0, world_size=1)
    group = dist._state["group"]
    fake.hold = True                               # the side stream's events stay pending
    out, send = np.zeros((1, 4), np.float32), np.arange(4, dtype=np.float32)
    alive = weakref.ref(send)
    work = group.all_gather(out, send)
    del send
    gc.collect()
    assert alive() is not None, "NCCL still reads this buffer on its stream"
    fake.hold = False
    work.wait()
    gc.collect()
    assert alive() is None
    np.testing.assert_array_equal(out, [[0, 1, 2, 3]])


def test_a_collective_that_never_completes_aborts_the_communicator_naming_the_rank(fake):
    dist.init_process_group("nccl", rank=0, world_size=1, timeout=0.05)
    fake.hold = True
    with pytest.raises(RuntimeError, match=r"rank 0 of 1: all_reduce\(sum\) of 3 elements did "
                                           r"not complete within 0.05 s"):
        dist.all_reduce(gd.ones(3))
    assert fake.comms[0].aborted


class FakeJob:
    """The MPIBackend that started the ranks: records what it is asked to do."""

    def __init__(self):
        self.calls = []

    def install_abort_on_error(self):
        self.calls.append("install")

    def abort(self, message):
        self.calls.append(("abort", message))

    def close(self):
        self.calls.append("close")


def test_ranks_that_mpi_started_abort_the_whole_job_on_errors_and_timeouts(fake):
    job = FakeJob()
    group = backends.NCCLBackend(0, 1, 0, lambda uid: uid, 0.05, job=job)
    group.install_abort_on_error()
    assert job.calls == ["install"]                 # an uncaught exception aborts every rank
    fake.hold = True
    with pytest.raises(RuntimeError, match="did not complete"):
        group.all_reduce(np.ones(2, np.float32)).wait()
    assert job.calls[1][0] == "abort" and "rank 0 of 1" in job.calls[1][1]
    group.close()
    assert job.calls[-1] == "close"


def test_fit_combines_its_host_logs_through_device_memory_under_nccl(fake, monkeypatch):
    """fit's loss sums and gathered predictions are NumPy arrays: under NCCL they go through
    device memory, since NCCL refuses host arrays (a pretend world of two; the stand-in moves
    rank 0's part only)."""
    from gpudl.distributed.training import FitContext
    dist.init_process_group("nccl", rank=0, world_size=1)
    group = dist._state["group"]
    monkeypatch.setattr(group, "world_size", 2)
    monkeypatch.setattr(backends, "_on_device", lambda a: isinstance(a, DeviceArray))
    run = FitContext.__new__(FitContext)
    run.group = group
    loss, count, predictions, targets = run.combine(
        3.5, 7, np.arange(6, dtype=np.float32).reshape(3, 2), np.array([1, 0, 1]))
    assert (loss, count) == (3.5, 7)
    assert type(predictions) is np.ndarray and predictions.shape == (3, 2)   # rank 1: none here
    np.testing.assert_array_equal(predictions, np.arange(6).reshape(3, 2))
    assert [c[1] for c in _calls(fake)] == ["allReduce", "allGather", "allGather", "allGather",
                                            "allGather"]
