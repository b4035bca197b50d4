"""gpudl.distributed: a process group and collectives on tensors, with PyTorch's names.

One process per device (or CPU slot), started by a launcher::

    mpiexec -n 4 python train.py                    # backend 'mpi' (CPU) or 'nccl' (ids over MPI)
    torchrun --nproc-per-node 8 train.py            # RANK, WORLD_SIZE, MASTER_ADDR, ... set

``init_process_group()`` joins the group; ``all_reduce``, ``broadcast``, ``all_gather`` and
``reduce_scatter`` change their tensors in place, as PyTorch's do, and with ``async_op=True``
return a Work to ``wait()`` on. A collective that does not complete within ``timeout`` (a rank
died or hangs) ends the job with a message naming the rank instead of hanging; under MPI an
uncaught exception on any rank aborts every rank at once.
"""

import datetime
import enum
import os

from .. import backend as _device
from .. import dtypes as _dtypes
from . import backends as _backends
from . import rendezvous
from .sampler import DistributedSampler  # noqa: F401 (re-exported)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)      # PyTorch's default for its process groups
BACKENDS = ("mpi", "nccl")

_state = {"group": None}


class ReduceOp(enum.Enum):
    SUM = _backends.SUM
    AVG = _backends.AVG
    PRODUCT = _backends.PRODUCT
    MIN = _backends.MIN
    MAX = _backends.MAX


# ----------------------------------------------------------------- the process group
def is_available():
    return True


def is_mpi_available():
    import importlib.util
    return importlib.util.find_spec("mpi4py") is not None


def is_nccl_available():
    try:
        _backends._import_nccl()
        return True
    except ImportError:
        return False


def is_initialized():
    """Whether ``init_process_group`` has run (and ``destroy_process_group`` not since)."""
    return _state["group"] is not None


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1):
    """Join the default process group.

    Args:
        backend: 'mpi' (CPU tensors; GPU tensors staged through the host), 'nccl' (CUDA tensors),
            or None: nccl on the CUDA path, mpi otherwise.
        init_method: 'env://' (the default) or None.
        timeout: a ``datetime.timedelta`` (or seconds) after which a collective that has not
            completed ends the job; 30 minutes by default.
        world_size, rank: under MPI they must match the launcher's when given; for nccl without
            MPI they override ``WORLD_SIZE`` and ``RANK``.
    """
    if is_initialized():
        raise RuntimeError("init_process_group: trying to initialize the default process group "
                           "twice; call destroy_process_group() first")
    if backend is None:
        backend = "nccl" if _device.cuda_available() and not _device.SIMULATOR else "mpi"
    backend = str(backend).lower()
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {BACKENDS} or None, got "
                         f"{backend!r}")
    if init_method not in (None, "env://"):
        raise ValueError(f"init_process_group: init_method must be 'env://' or None, got "
                         f"{init_method!r} (use a launcher's environment variables or mpiexec)")
    seconds = _seconds(timeout)
    rank = None if rank is None or rank < 0 else int(rank)
    world_size = None if world_size is None or world_size < 0 else int(world_size)
    if backend == "mpi":
        group = _backends.MPIBackend(seconds)
        for name, given, actual in (("rank", rank, group.rank),
                                    ("world_size", world_size, group.world_size)):
            if given is not None and given != actual:
                raise ValueError(f"init_process_group: {name}={given} but MPI says {actual} "
                                 "(start the ranks with mpiexec -n WORLD_SIZE)")
    else:
        group = _nccl_group(rank, world_size, seconds)
    group.install_abort_on_error()
    _state["group"] = group


def _seconds(timeout):
    if timeout is None:
        return DEFAULT_TIMEOUT.total_seconds()
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"init_process_group: timeout must be a positive datetime.timedelta or "
                         f"number of seconds, got {timeout!r}")
    return float(seconds)


def _nccl_group(rank, world_size, seconds):
    """NCCL with the id over TCP (launcher variables or rank=/world_size=) or over MPI."""
    if rank is not None or world_size is not None or "RANK" in os.environ:
        info = rendezvous.from_environ(rank, world_size)

        def exchange(uid):
            if info.world_size == 1:
                return uid
            payload = rendezvous.encode_id(uid) if info.rank == 0 else None
            return rendezvous.decode_id(rendezvous.tcp_exchange(info, payload, seconds))
        return _backends.NCCLBackend(info.rank, info.world_size, info.local_rank, exchange,
                                     seconds)
    if not is_mpi_available():
        raise ValueError("init_process_group(backend='nccl'): set RANK and WORLD_SIZE (and "
                         "MASTER_ADDR, MASTER_PORT), pass rank= and world_size=, or launch with "
                         "mpiexec and install mpi4py")
    mpi = _backends.MPIBackend(seconds)
    return _backends.NCCLBackend(mpi.rank, mpi.world_size, mpi.local_rank,
                                 lambda uid: mpi.comm.bcast(uid, root=0), seconds, job=mpi)


def _group(where):
    if _state["group"] is None:
        raise RuntimeError(f"{where}: the default process group has not been initialized; call "
                           "gpudl.distributed.init_process_group() first")
    return _state["group"]


def _check_group_arg(group, where):
    if group is not None and group is not _state["group"]:
        raise ValueError(f"{where}: only the default process group (group=None) is supported")


def get_rank(group=None):
    """This process's rank, 0 .. world size - 1."""
    _check_group_arg(group, "get_rank")
    return _group("get_rank").rank


def get_world_size(group=None):
    """The number of processes in the group."""
    _check_group_arg(group, "get_world_size")
    return _group("get_world_size").world_size


def get_backend(group=None):
    """'mpi' or 'nccl'."""
    _check_group_arg(group, "get_backend")
    return _group("get_backend").name


def destroy_process_group(group=None):
    """Leave the group (NCCL's communicator is destroyed; MPI itself ends with the process)."""
    _check_group_arg(group, "destroy_process_group")
    _group("destroy_process_group").close()
    _state["group"] = None


def barrier(group=None, async_op=False):
    """Wait until every rank has called ``barrier`` (or the timeout ends the job)."""
    _check_group_arg(group, "barrier")
    return _run(_group("barrier").barrier(), async_op)


# ----------------------------------------------------------------- collectives on tensors
def _run(work, async_op):
    return work if async_op else work.wait() and None


def _tensor(t, where, name="tensor"):
    from ..tensor import Tensor
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a gpudl Tensor, got {type(t).__name__}")
    return t


def _reduce_op(op, dtype, where):
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{where}: op must be a gpudl.distributed.ReduceOp, got {op!r}")
    if op is ReduceOp.AVG and not (_dtypes.is_floating(dtype) or dtype.kind == "c"):
        raise TypeError(f"{where}: ReduceOp.AVG needs a floating-point tensor, got {dtype}")
    return op.value


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks; every rank's ``tensor`` then holds the result."""
    _check_group_arg(group, "all_reduce")
    g = _group("all_reduce")
    op = _reduce_op(op, _tensor(tensor, "all_reduce").dtype, "all_reduce")
    return _run(g.all_reduce(tensor._data, op), async_op)


def broadcast(tensor, src=0, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank."""
    _check_group_arg(group, "broadcast")
    g = _group("broadcast")
    _tensor(tensor, "broadcast")
    if not 0 <= src < g.world_size:
        raise ValueError(f"broadcast: src must be a rank in 0..{g.world_size - 1}, got {src}")
    return _run(g.broadcast(tensor._data, src), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[i]`` (one tensor per rank, shaped like ``tensor``) with rank i's."""
    _check_group_arg(group, "all_gather")
    g = _group("all_gather")
    _tensor(tensor, "all_gather")
    _check_list(tensor_list, tensor, g.world_size, "all_gather", "tensor_list")
    xp = _device.get_array_module(tensor._data)
    out = xp.empty((g.world_size,) + tensor._data.shape, tensor.dtype)
    work = g.all_gather(out, xp.ascontiguousarray(tensor._data))
    return _run(work.then(lambda: _scatter_rows(out, tensor_list)), async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """``output`` on rank r becomes the reduction over ranks of their ``input_list[r]``."""
    _check_group_arg(group, "reduce_scatter")
    g = _group("reduce_scatter")
    op = _reduce_op(op, _tensor(output, "reduce_scatter", "output").dtype, "reduce_scatter")
    _check_list(input_list, output, g.world_size, "reduce_scatter", "input_list")
    xp = _device.get_array_module(output._data)
    send = xp.concatenate([t._data.reshape(-1) for t in input_list])
    out = xp.empty(output._data.size, output.dtype)
    work = g.reduce_scatter(out, send, op)
    return _run(work.then(lambda: output._data.__setitem__(..., out.reshape(output.shape))),
                async_op)


def _check_list(tensors, like, world_size, where, name):
    if not isinstance(tensors, (list, tuple)) or len(tensors) != world_size:
        got = (f"a list of {len(tensors)}" if isinstance(tensors, (list, tuple))
               else type(tensors).__name__)
        raise ValueError(f"{where}: {name} must be a list of {world_size} tensors (one per rank), "
                         f"got {got}")
    for t in tensors:
        _tensor(t, where, name + " item")
        if t.shape != like.shape or t.dtype != like.dtype:
            raise ValueError(f"{where}: every tensor in {name} must have shape {like.shape} and "
                             f"dtype {like.dtype}, got {t.shape} {t.dtype}")


def _scatter_rows(rows, tensors):
    for row, t in zip(rows, tensors):
        t._data[...] = row
