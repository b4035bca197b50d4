"""DataLoader worker processes: loading batches in parallel with training, as torch's workers do.

Each worker owns an index queue; every result comes back on one shared queue tagged with its epoch
and batch number, and the main process yields batches in order, keeping ``prefetch_factor``
batches per worker in flight. A worker is a host process: it makes cpu tensors (a forked child must
not touch the parent's GPU context), seeds Python's ``random``, gpudl's generator and NumPy's global
generator as torch does (``base_seed + worker_id``; NumPy from torch's mixing of the two), runs
``worker_init_fn`` and serves batches until told to stop, or until its parent dies. A worker's
exception is re-raised in the main process with the same type, naming the worker and the index.
"""

import collections
import itertools
import multiprocessing
import os
import pickle
import queue
import random as pyrandom
import sys
import traceback
import weakref
from collections import namedtuple

import numpy as np

from . import backend, random

WorkerInfo = namedtuple("WorkerInfo", ["id", "num_workers", "seed", "dataset"])
WorkerInfo.__doc__ = "What ``get_worker_info()`` returns inside a worker (None elsewhere)."

_POLL_S = 0.5            # how often a waiting process checks that its peer is still alive
_JOIN_S = 5.0            # how long close() waits for a worker to exit before terminating it
_info = None


def get_worker_info():
    """This worker's ``WorkerInfo(id, num_workers, seed, dataset)``; None in the main process."""
    return _info


def numpy_seed(base_seed, worker_id):
    """The four 32-bit words torch seeds a worker's NumPy generator with (its _generate_state:
    a hash of the worker id and both halves of base_seed, mixed across four words)."""
    mask = 0xFFFFFFFF
    multiplier = [0x43B0D7E5]

    def hash32(value):
        value = (value ^ multiplier[0]) & mask
        multiplier[0] = (multiplier[0] * 0x931E8875) & mask
        value = (value * multiplier[0]) & mask
        return value ^ (value >> 16)

    def mix(x, y):
        result = ((0xCA01F9DD * x) - (0x4973F715 * y)) & mask
        return result ^ (result >> 16)

    pool = [hash32(v) for v in (worker_id, base_seed & mask, base_seed >> 32, 0)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hash32(pool[src]))
    state, multiplier_b = [], 0x8B51F9DD
    for value in pool:
        value = (value ^ multiplier_b) & mask
        multiplier_b = (multiplier_b * 0x58F38DED) & mask
        value = (value * multiplier_b) & mask
        state.append(value ^ (value >> 16))
    return state


class _Failure:
    """An exception raised in a worker, carried to the main process as type + text."""

    def __init__(self, exc, worker_id):
        self.type = type(exc)
        try:
            pickle.dumps(self.type)
        except Exception:           # a class defined inside a function: send its name only
            self.type = RuntimeError
        self.text = (f"{exc}\n\nRaised in DataLoader worker {worker_id}; its traceback:\n"
                     + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def reraise(self):
        raise same_type_error(self.type, self.text)


def same_type_error(exc_type, message):
    """An exception of ``exc_type`` carrying ``message``, or a RuntimeError when that type cannot
    be built from one message (its constructor wants other arguments)."""
    try:
        error = exc_type(message)
        if error.args == (message,):
            return error
    except Exception:
        pass
    return RuntimeError(f"{exc_type.__name__}: {message}")


def _serve(fetch, dataset, jobs, results, worker_id, num_workers, base_seed, init_fn):
    """A worker's whole life: seed, initialise, then answer (epoch, number, indices) jobs."""
    global _info
    backend.DEFAULT_DEVICE = "cpu"
    seed = base_seed + worker_id
    pyrandom.seed(seed)
    random.forget_device_states()
    random.manual_seed(seed)
    np.random.seed(numpy_seed(base_seed, worker_id))
    _info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_failure = None
    try:
        if init_fn is not None:
            try:
                init_fn(worker_id)
            except Exception as exc:
                init_failure = _Failure(exc, worker_id)
        parent = os.getppid()
        while True:
            try:
                job = jobs.get(timeout=_POLL_S)
            except queue.Empty:
                if os.getppid() != parent:         # the main process died: nobody will ask
                    return
                continue
            if job is None:
                return
            epoch, number, indices = job
            if init_failure is not None:
                results.put(pickle.dumps((epoch, number, init_failure)))
                continue
            try:
                # pickled here, not in the queue's feeder thread, so a failure reaches the parent
                payload = pickle.dumps((epoch, number, fetch(indices)), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                payload = pickle.dumps((epoch, number, _Failure(exc, worker_id)))
            results.put(payload)
    except KeyboardInterrupt:        # Ctrl-C reaches the whole process group: leave quietly
        return


class StreamBatches:
    """A worker's answer to a stream request: the next batch of its own pass over an
    IterableDataset (``make_batches()`` starts a pass), a new pass for each epoch; ``Ended()``
    once its pass is over. Each worker iterates its own copy of the data set, as in torch:
    sharding it is the data set's job (``get_worker_info()``)."""

    def __init__(self, make_batches):
        self.make_batches, self.epoch, self.batches = make_batches, None, None

    def __call__(self, epoch):
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, self.make_batches()
        return next(self.batches, Ended())


class Ended:
    """What a worker answers a stream request with once its pass is over."""


class WorkerPool:
    """``num_workers`` processes serving ``fetch(indices)``; ``run(batches)`` yields in order."""

    def __init__(self, fetch, dataset, num_workers, base_seed, init_fn, context, timeout):
        if context is None:
            context = "fork" if sys.platform.startswith("linux") else None
        ctx = context if hasattr(context, "Process") else multiprocessing.get_context(context)
        self.num_workers, self.timeout, self.epoch = num_workers, timeout, 0
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(num_workers)]
        self.processes = [
            ctx.Process(target=_serve, daemon=True,
                        args=(fetch, dataset, self.jobs[i], self.results, i, num_workers,
                              base_seed, init_fn))
            for i in range(num_workers)]
        for process in self.processes:
            process.start()
        self._closer = weakref.finalize(self, _close, self.processes, self.jobs, self.results)

    def run(self, batches, prefetch_factor):
        """Yield ``fetch(b)`` for each index list ``b`` of ``batches``, in order."""
        self.epoch += 1
        batches = iter(batches)
        sent = received = 0
        ready = {}
        in_flight = prefetch_factor * self.num_workers
        exhausted = False
        while True:
            while not exhausted and sent - received < in_flight:
                indices = next(batches, None)
                if indices is None:
                    exhausted = True
                    break
                self.jobs[sent % self.num_workers].put((self.epoch, sent, indices))
                sent += 1
            if received == sent:
                return
            batch = self._answer(received, ready)
            received += 1
            yield batch

    def run_streams(self, prefetch_factor):
        """Yield the batches the workers make of a stream (each its own pass: ``StreamBatches``),
        one from each worker in turn, as torch does; a worker whose pass ended is skipped from
        then on."""
        self.epoch += 1
        asked, ready = collections.deque(), {}       # (request number, worker), in order
        numbers = itertools.count()

        def ask(worker):
            number = next(numbers)
            self.jobs[worker].put((self.epoch, number, self.epoch))
            asked.append((number, worker))
        for _ in range(prefetch_factor):
            for worker in range(self.num_workers):
                ask(worker)
        while asked:
            number, worker = asked.popleft()
            batch = self._answer(number, ready)
            if not isinstance(batch, Ended):
                ask(worker)
                yield batch

    def _answer(self, number, ready):
        """The answer to request ``number`` of this epoch (others that come first wait in
        ``ready``); a worker's failure is raised here."""
        while number not in ready:
            epoch, got, batch = self._next_result()
            if epoch == self.epoch:              # older epochs' answers were abandoned
                ready[got] = batch
        batch = ready.pop(number)
        if isinstance(batch, _Failure):
            batch.reraise()
        return batch

    def _next_result(self):
        waited = 0.0
        while True:
            try:
                return pickle.loads(self.results.get(timeout=_POLL_S))
            except queue.Empty:
                waited += _POLL_S
            dead = [p for p in self.processes if not p.is_alive()]
            if dead:
                codes = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead)
                self.close()
                raise RuntimeError(f"DataLoader worker(s) exited unexpectedly ({codes})")
            if self.timeout and waited >= self.timeout:
                self.close()
                raise RuntimeError(f"DataLoader timed out after {self.timeout} seconds "
                                   "waiting for a batch from its workers")

    def close(self):
        self._closer()

    @property
    def alive(self):
        return self._closer.alive


def _close(processes, jobs, results):
    """Stop the workers: ask, wait, then terminate whatever is left; release the queues."""
    for q, process in zip(jobs, processes):
        if process.is_alive():
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
    for process in processes:
        process.join(_JOIN_S)
        if process.is_alive():
            process.terminate()
            process.join(_JOIN_S)
    for q in jobs + [results]:
        q.cancel_join_thread()
        q.close()
