"""The engines under a process group: MPI (mpi4py) and NCCL (CuPy), on raw arrays.

Both backends offer the same five calls on NumPy/CuPy arrays, each returning a ``Work`` at once:
``all_reduce(a, op)``, ``broadcast(a, src)``, ``all_gather(out, a)`` (out: (world, *a.shape)),
``reduce_scatter(out, a, op)`` (a: (world * out.size,)) and ``barrier()``. Work is waited on by
polling against a deadline, never by a blocking call, so a rank that died or stopped answering
turns into an error naming this rank and the collective after ``timeout`` seconds rather than a
hang. The tensor-level API (``gpudl.distributed``) and DistributedDataParallel's Reducer sit on
top of these calls, so the bucketing and overlap logic is the same on both engines.
"""

import os
import sys
import time

import numpy as np

from .. import backend, dtypes
from . import rendezvous

SUM, AVG, MAX, MIN, PRODUCT = "sum", "avg", "max", "min", "product"
# Waiting: poll without sleeping for _SPIN_S, then sleep between polls, doubling up to
# _POLL_MAX_S, so long waits (a straggling rank) leave the CPU to the others. MPI progresses a
# nonblocking collective only inside MPI calls: a 4 MiB all-reduce over 2 ranks took 8-11 ms
# when sleeps began after 0.2 ms and 0.35 ms with 2 ms of spinning (blocking Allreduce: 0.9 ms).
_SPIN_S = 2e-3
_POLL_MAX_S = 1e-3
_ABORT_GRACE_S = 0.5


def _missing(package, backend_name, install):
    return ImportError(f"init_process_group(backend={backend_name!r}) needs the package "
                       f"{package!r}, which is not installed: {install} "
                       "(or pip install gpudl[distributed])")


class Work:
    """A collective in flight: ``wait()`` polls it to completion or to the group's deadline."""

    def __init__(self, group, what, test, finish=None, keep=()):
        self.group, self.what, self._test = group, what, test
        self._finishers = [finish] if finish else []
        self._done = False
        # arrays the collective reads or writes on another stream: alive until it completes, so
        # a temporary's memory is not handed out again while the transfer still uses it
        self._keep = keep

    def then(self, finish):
        """Run ``finish()`` once the collective completes (at once if it has); returns self."""
        if self._done:
            finish()
        else:
            self._finishers.append(finish)
        return self

    def is_completed(self):
        if not self._done and self._test():
            self._complete()
        return self._done

    def wait(self, timeout=None):
        if self._done:
            return True
        limit = self.group.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline, spin_until, pause = start + limit, start + _SPIN_S, 1e-5
        while not self._test():
            now = time.monotonic()
            if now < spin_until:
                continue
            if now > deadline:
                self.group.abort(
                    f"gpudl.distributed: rank {self.group.rank} of {self.group.world_size}: "
                    f"{self.what} did not complete within {limit:g} s (timeout=); another rank "
                    "has died, hangs, or did not call the same collectives in the same order")
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)
        self._complete()
        return True

    def _complete(self):
        self._done = True
        for finish in self._finishers:
            finish()
        self._keep = ()


class _Backend:
    """What both engines share: rank, size, timeout, and the tensor-free collectives' checks."""

    name = None

    def __init__(self, rank, world_size, timeout):
        self.rank, self.world_size, self.timeout = rank, world_size, float(timeout)

    def device_array(self, host):
        """A NumPy array where this engine's collectives take it (MPI: as it is)."""
        return host

    def host_array(self, a):
        """``device_array``'s inverse: the collective's result as a NumPy array."""
        return a

    def _check_gather(self, out, a, where):
        if out.shape != (self.world_size,) + a.shape or out.dtype != a.dtype:
            raise ValueError(f"{where}: the output must have shape {(self.world_size,) + a.shape} "
                             f"and dtype {a.dtype}, got {out.shape} {out.dtype}")


class MPIBackend(_Backend):
    """Collectives over MPI_COMM_WORLD with nonblocking calls (MPI-3: Iallreduce, Ibcast, ...).

    Device (CuPy) arrays are staged through host memory, so any MPI build works; NCCL is the
    fast path for GPUs. An uncaught exception on any rank aborts the whole job (see
    ``install_abort_on_error``), so the other ranks stop at once instead of waiting.
    """

    name = "mpi"

    def __init__(self, timeout):
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise _missing("mpi4py", "mpi", "pip install mpich mpi4py") from exc
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), timeout)
        self.local_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self._excepthook = None        # (the previous hook, ours) while ours is installed
        self._ops = {SUM: MPI.SUM, AVG: MPI.SUM, MAX: MPI.MAX, MIN: MPI.MIN, PRODUCT: MPI.PROD}

    def _host(self, a):
        """(host array MPI works on, copy-back to run when done) for NumPy or CuPy ``a``.

        MPI has no bfloat16: such arrays travel as float32, which holds each of their values
        exactly (copies stay exact; a sum or average is rounded to bfloat16 once, at the end).
        """
        wide = np.float32 if a.dtype == dtypes.bfloat16 else None
        if not backend.is_device_array(a):
            if a.flags.c_contiguous and wide is None:
                return a, None
            host = np.ascontiguousarray(a, dtype=wide)
            return host, lambda: a.__setitem__(..., host)
        host = backend.to_numpy(a).astype(wide or a.dtype, copy=False)
        if wide is None and a.flags.c_contiguous:
            return host, lambda: a.set(host)
        return host, lambda: a.__setitem__(..., backend.get_array_module(a).asarray(
            host.astype(a.dtype, copy=False)))

    def _work(self, what, request, finish):
        return Work(self, what, request.Test, finish)

    def _reduced(self, host, op, back):
        """What to run when a reduction into ``host`` completes: AVG's division, the copy back."""
        def finish():
            if op == AVG:       # MPI has no average: a sum, then divided here
                np.divide(host, self.world_size, out=host, casting="unsafe")
            if back:
                back()
        return finish

    def all_reduce(self, a, op=SUM):
        host, back = self._host(a)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, host, self._ops[op])
        return self._work(f"all_reduce({op}) of {a.size} elements", request,
                          self._reduced(host, op, back))

    def broadcast(self, a, src):
        host, back = self._host(a)
        request = self.comm.Ibcast(host, root=src)
        return self._work(f"broadcast from rank {src}", request, back)

    def all_gather(self, out, a):
        self._check_gather(out, a, "all_gather")
        send, _ = self._host(a)
        host, back = self._host(out)
        request = self.comm.Iallgather(send, host)
        return self._work(f"all_gather of {a.size} elements", request, back)

    def reduce_scatter(self, out, a, op=SUM):
        send, _ = self._host(a)
        host, back = self._host(out)
        request = self.comm.Ireduce_scatter_block(send, host, self._ops[op])
        return self._work(f"reduce_scatter({op}) of {a.size} elements", request,
                          self._reduced(host, op, back))

    def barrier(self):
        return self._work("barrier", self.comm.Ibarrier(), None)

    def abort(self, message):
        print(message, file=sys.stderr, flush=True)
        # mpiexec forwards each rank's stderr through its proxy, which the abort tears down:
        # give the message a moment to get through first.
        time.sleep(_ABORT_GRACE_S)
        self.comm.Abort(1)
        os._exit(1)         # MPI_Abort may return before the launcher kills this process

    def close(self):
        """Restore the exception hook (mpi4py finalizes MPI itself at interpreter exit)."""
        if self._excepthook is not None and sys.excepthook is self._excepthook[1]:
            sys.excepthook = self._excepthook[0]
        self._excepthook = None

    def install_abort_on_error(self):
        """An uncaught exception on this rank prints it, names the rank, and aborts every rank."""
        previous = sys.excepthook

        def hook(kind, value, tb):
            previous(kind, value, tb)
            self.abort(f"gpudl.distributed: rank {self.rank} of {self.world_size} failed with "
                       f"{kind.__name__}: {value}; aborting all ranks")
        sys.excepthook = hook
        self._excepthook = (previous, hook)


class NCCLBackend(_Backend):
    """Collectives on CuPy arrays with NCCL on a dedicated communication stream.

    Each call makes the communication stream wait for what the current stream has queued (an
    event, not a host sync), launches NCCL there, and leaves the current stream free: gradients
    of earlier layers are computed while later buckets are reduced. ``Work.wait`` makes the
    current stream wait for the collective and polls its event against the deadline; on timeout
    the communicator is aborted and the error raised.

    ``job``: the MPIBackend when MPI started the ranks (the NCCL id went over MPI). Then, as on
    the MPI path, an uncaught exception or a timeout on one rank aborts every rank at once;
    without MPI the other ranks reach their own timeout and name themselves.
    """

    name = "nccl"

    def __init__(self, rank, world_size, local_rank, unique_id_exchange, timeout, job=None):
        cupy, nccl = _import_nccl()
        super().__init__(rank, world_size, timeout)
        self.cupy, self.nccl, self.local_rank, self.job = cupy, nccl, local_rank, job
        cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = unique_id_exchange(rendezvous.id_values(nccl.get_unique_id()) if rank == 0
                                 else None)
        self.comm = _communicator(nccl, world_size, uid, rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        # CuPy always defines NCCL_AVG; the library has ncclAvg only from 2.10 (version 21000)
        avg = nccl.NCCL_AVG if nccl.get_version() >= 21000 else None
        self._ops = {SUM: nccl.NCCL_SUM, MAX: nccl.NCCL_MAX, MIN: nccl.NCCL_MIN,
                     PRODUCT: nccl.NCCL_PROD, AVG: avg}

    def device_array(self, host):
        return self.cupy.asarray(host)        # NCCL moves device memory only

    def host_array(self, a):
        return a.get()

    def _type(self, a):
        if not _on_device(a):
            raise TypeError("the nccl backend works on CUDA tensors; got a tensor in host memory "
                            "(use backend='mpi' for CPU tensors)")
        if not a.flags.c_contiguous:
            raise ValueError("the nccl backend needs contiguous tensors")
        types = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
                 "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8",
                 "int8": "NCCL_INT8", "bool": "NCCL_UINT8", "bfloat16": "NCCL_BFLOAT16"}
        if a.dtype.name not in types:
            raise TypeError(f"the nccl backend does not reduce {a.dtype} tensors")
        return getattr(self.nccl, types[a.dtype.name])

    def _launch(self, what, call, arrays, finish=None):
        ready = self.cupy.cuda.get_current_stream().record()
        self.stream.wait_event(ready)
        with self.stream:
            call(self.stream.ptr)
        done = self.stream.record()

        def complete():
            self.cupy.cuda.get_current_stream().wait_event(done)
            if finish:
                finish()
        return Work(self, what, lambda: done.done, complete, keep=arrays)

    def _op(self, a, op):
        """(NCCL op, finish) with AVG as SUM then a division where this NCCL lacks ncclAvg."""
        if op == AVG and self._ops[AVG] is None:
            return self._ops[SUM], lambda: a.__itruediv__(self.world_size)
        return self._ops[op], None

    def all_reduce(self, a, op=SUM):
        kind, (nccl_op, finish) = self._type(a), self._op(a, op)
        return self._launch(f"all_reduce({op}) of {a.size} elements",
                            lambda s: self.comm.allReduce(_pointer(a), _pointer(a), a.size, kind,
                                                          nccl_op, s), (a,), finish)

    def broadcast(self, a, src):
        kind = self._type(a)
        return self._launch(f"broadcast from rank {src}",
                            lambda s: self.comm.broadcast(_pointer(a), _pointer(a), a.size, kind,
                                                          src, s), (a,))

    def all_gather(self, out, a):
        self._check_gather(out, a, "all_gather")
        kind = self._type(a)
        self._type(out)
        return self._launch(f"all_gather of {a.size} elements",
                            lambda s: self.comm.allGather(_pointer(a), _pointer(out), a.size,
                                                          kind, s), (a, out))

    def reduce_scatter(self, out, a, op=SUM):
        kind, (nccl_op, finish) = self._type(a), self._op(out, op)
        self._type(out)
        return self._launch(f"reduce_scatter({op}) of {a.size} elements",
                            lambda s: self.comm.reduceScatter(_pointer(a), _pointer(out), out.size,
                                                              kind, nccl_op, s), (a, out), finish)

    def barrier(self):
        return self.all_reduce(self.cupy.zeros(1, self.cupy.float32))

    def abort(self, message):
        self.comm.abort()
        if self.job is not None:
            self.job.abort(message)
        raise RuntimeError(message)

    def close(self):
        self.stream.synchronize()
        self.comm.destroy()
        if self.job is not None:
            self.job.close()

    def install_abort_on_error(self):
        if self.job is not None:
            self.job.install_abort_on_error()


def _on_device(a):
    return backend.is_device_array(a)


def _pointer(a):
    """The device address NCCL reads or writes (a CuPy array's)."""
    return a.data.ptr


def _communicator(nccl, world_size, uid, rank):
    """An NCCL communicator for the id's 128 values: CuPy 14 takes the id as bytes, earlier CuPy
    as a tuple of ints; the other form is a TypeError before NCCL is called."""
    try:
        return nccl.NcclCommunicator(world_size, uid, rank)
    except TypeError:
        return nccl.NcclCommunicator(world_size, np.asarray(uid, dtype=np.int8).tobytes(), rank)


def _import_nccl():
    try:
        import cupy
    except ImportError as exc:
        raise _missing("cupy", "nccl", "pip install cupy-cuda12x (or cupy-cuda13x)") from exc
    nccl, cause = None, None
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        cause = exc
    if nccl is None or not getattr(nccl, "available", True):
        raise ImportError("init_process_group(backend='nccl'): CuPy could not load NCCL: pip "
                          "install nvidia-nccl-cu12 (or -cu13), matching CuPy's CUDA; see "
                          "CuPy's installation guide") from cause
    return cupy, nccl
