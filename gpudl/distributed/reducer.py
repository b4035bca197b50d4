"""The Reducer: gradients averaged over ranks in buckets, launched while backward still runs.

Parameters are grouped, in reverse registration order (roughly the order backward produces
their gradients), into buckets of about ``bucket_cap_mb`` MB of one dtype and device. A
post-accumulate hook on each parameter marks it ready; when every parameter of a bucket is ready
its gradients are copied into one flat array and an asynchronous all-reduce (AVG) is launched,
buckets strictly in index order so that every rank issues the same collectives in the same order.
When the last bucket has been launched the Reducer waits for all of them and writes the averages
back into ``.grad``. The backend object does the collectives, so the MPI and NCCL paths share
all of this.
"""

import weakref

import numpy as np

from .. import backend as _device
from ..tensor import Tensor
from . import backends


class _Bucket:
    def __init__(self, indices, params):
        self.indices = indices                                     # into Reducer.params
        sizes = [params[i]._data.size for i in indices]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        first = params[indices[0]]._data
        self.flat = _device.get_array_module(first).zeros(int(self.offsets[-1]), first.dtype)
        self.work = None
        self.pending = len(indices)


def assign_buckets(params, cap_bytes):
    """Lists of parameter indices, reverse registration order, each under ``cap_bytes`` (a
    parameter larger than the cap gets a bucket of its own), one dtype and device per bucket."""
    buckets, current, size, kind = [], [], 0, None
    for i in reversed(range(len(params))):
        p = params[i]
        nbytes = p._data.size * p._data.dtype.itemsize
        this = (p._data.dtype, p.device)
        if current and (this != kind or size + nbytes > cap_bytes):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
        kind = this
    if current:
        buckets.append(current)
    return buckets


class Reducer:
    """Averages the gradients of ``params`` over the process group ``group`` (a backend)."""

    def __init__(self, params, group, bucket_cap_mb=25, find_unused_parameters=False,
                 names=None):
        self.params, self.group = list(params), group
        self.names = names or [f"parameter {i}" for i in range(len(self.params))]
        self.find_unused_parameters = find_unused_parameters
        self.buckets = [_Bucket(ix, self.params)
                        for ix in assign_buckets(self.params, bucket_cap_mb * 1024 * 1024)]
        self.bucket_of = {}
        for b, bucket in enumerate(self.buckets):
            for i in bucket.indices:
                self.bucket_of[i] = b
        self.handles = [p.register_post_accumulate_grad_hook(self._hook(i))
                        for i, p in enumerate(self.params)]
        self.expecting = False         # a synced forward ran; its backward reduces
        self.launch_log = []           # bucket indices in launch order (for tests and debugging)
        self._reset()

    def _reset(self):
        self.ready = [False] * len(self.params)
        self.used = np.zeros(len(self.params), np.int32)
        self.unused = []
        self.marked_unused = False
        self.next_bucket = 0
        for bucket in self.buckets:
            bucket.pending, bucket.work = len(bucket.indices), None

    # ----------------------------------------------------------------- per iteration
    def prepare_for_backward(self, outputs):
        """Called at the end of a synced forward: the next backward reduces."""
        if self.in_progress():
            self._unfinished_error()
        self._reset()
        self.expecting = True
        if self.find_unused_parameters:
            reached = _leaves_reached(outputs)
            self.unused = [i for i, p in enumerate(self.params) if id(p) not in reached]

    def in_progress(self):
        return self.expecting and any(self.ready)

    def skip_backward(self):
        """A forward under no_sync (or without grad): its backward only accumulates locally."""
        if self.in_progress():
            self._unfinished_error()
        self.expecting = False

    def _unfinished_error(self):
        missing = [self.names[i] for i, r in enumerate(self.ready) if not r]
        raise RuntimeError(
            "DistributedDataParallel: the previous iteration's gradient reduction did not finish: "
            f"these parameters received no gradient: {', '.join(missing)}. Pass "
            "find_unused_parameters=True, or make every parameter take part in the loss")

    def _hook(self, index):
        # a weak reference: the hook registry must not keep a dropped DDP (and its buckets) alive
        owner = weakref.ref(self)

        def hook(param):
            reducer = owner()
            if reducer is not None:
                reducer._grad_ready(index)
        return hook

    def _grad_ready(self, index):
        if not self.expecting:
            return
        if not self.marked_unused:
            self.marked_unused = True
            for i in self.unused:
                self._mark_ready(i)
        self.used[index] = 1
        self._mark_ready(index)

    def _mark_ready(self, index):
        if self.ready[index]:
            raise RuntimeError(
                f"DistributedDataParallel: {self.names[index]} was marked ready twice in one "
                "iteration (a second backward through a synced forward?); run the extra "
                "backward passes under no_sync()")
        self.ready[index] = True
        bucket = self.buckets[self.bucket_of[index]]
        bucket.pending -= 1
        while self.next_bucket < len(self.buckets) and \
                self.buckets[self.next_bucket].pending == 0:
            self._launch(self.next_bucket)
            self.next_bucket += 1
        if self.next_bucket == len(self.buckets):
            self._finalize()
        else:       # MPI moves collectives along only inside its calls: test the launched ones
            for launched in self.buckets[:self.next_bucket]:
                launched.work.is_completed()

    def _launch(self, b):
        bucket = self.buckets[b]
        for j, i in enumerate(bucket.indices):
            view = bucket.flat[bucket.offsets[j]:bucket.offsets[j + 1]]
            grad = self.params[i].grad
            if self.used[i] and grad is not None:
                view[...] = grad._data.reshape(-1)
            else:
                view[...] = 0
        bucket.work = self.group.all_reduce(bucket.flat, backends.AVG)
        self.launch_log.append(b)

    def _finalize(self):
        for bucket in self.buckets:
            bucket.work.wait()
        used = self.used
        if self.find_unused_parameters:        # a parameter used on any rank gets the average
            xp = _device.get_array_module(self.buckets[0].flat)
            anywhere = xp.asarray(self.used)
            self.group.all_reduce(anywhere, backends.MAX).wait()
            used = _device.to_numpy(anywhere)
        for bucket in self.buckets:
            for j, i in enumerate(bucket.indices):
                if used[i]:
                    self._write_grad(self.params[i],
                                     bucket.flat[bucket.offsets[j]:bucket.offsets[j + 1]])
        self.expecting = False

    @staticmethod
    def _write_grad(param, flat):
        value = flat.reshape(param._data.shape)
        if param.grad is None:
            param.grad = Tensor._make(value.copy(), False, None, 0, param.device)
        else:
            param.grad._data[...] = value

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _leaves_reached(outputs):
    """ids of the leaf tensors that the graphs behind ``outputs`` lead to."""
    stack = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    seen, leaves = set(), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for edge in node.edges:
            if isinstance(edge, tuple):
                stack.append(edge[0])
            elif edge is not None:
                leaves.add(id(edge))
    for t in _tensors(outputs):
        if t.grad_fn is None and t.requires_grad:
            leaves.add(id(t))
    return leaves


def _tensors(value):
    """Every Tensor inside nested tuples, lists and dicts."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
