"""Who am I, and how do the ranks meet: the launcher's environment and the NCCL id exchange.

``torchrun``-style launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; ``mpiexec`` and ``srun`` set their own variables and let MPI answer. NCCL needs
one 128-byte id made by rank 0 and known to every rank: it travels over MPI when MPI runs the
job, otherwise over one TCP connection per rank to rank 0 at MASTER_ADDR:MASTER_PORT (what
PyTorch's TCPStore does for the same id).
"""

import os
import socket
import time
from dataclasses import dataclass

import numpy as np

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
ID_BYTES = 2 * 128          # NCCL's 128 id chars sent as int16: exact whatever their signedness


@dataclass(frozen=True)
class EnvInfo:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int_var(environ, name, given, default=None):
    if given is not None:
        return int(given)
    if name not in environ:
        if default is not None:
            return default
        raise ValueError(f"init_process_group(init_method='env://'): environment variable {name} "
                         f"is not set (a launcher sets {', '.join(ENV_VARS)}), and {name.lower()}= "
                         "was not passed")
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"init_process_group: environment variable {name} must be an integer, "
                         f"got {environ[name]!r}") from None


def from_environ(rank=None, world_size=None, environ=None):
    """The launcher's variables, with ``rank``/``world_size`` arguments taking precedence."""
    environ = os.environ if environ is None else environ
    rank = _int_var(environ, "RANK", rank)
    world_size = _int_var(environ, "WORLD_SIZE", world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: need 0 <= rank < world_size, got rank={rank}, "
                         f"world_size={world_size}")
    local_rank = _int_var(environ, "LOCAL_RANK", None, default=rank)
    addr = environ.get("MASTER_ADDR", "127.0.0.1")
    port = _int_var(environ, "MASTER_PORT", None, default=29500)
    if not 0 < port < 65535:
        raise ValueError(f"init_process_group: MASTER_PORT must be in 1..65534, got {port}")
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        port += 1          # torchrun's agent already serves its own store on MASTER_PORT
    return EnvInfo(rank, world_size, local_rank, addr, port)


def id_values(unique_id):
    """NCCL's unique id as 128 signed byte values, whichever form CuPy gave it in: a tuple of
    ints (CuPy 13 and earlier) or bytes (CuPy 14)."""
    if isinstance(unique_id, (bytes, bytearray)):
        return tuple(int(v) for v in np.frombuffer(unique_id, dtype=np.int8))
    return tuple(int(v) for v in unique_id)


def encode_id(unique_id):
    return np.asarray(unique_id, dtype="<i2").tobytes()


def decode_id(payload):
    return tuple(int(v) for v in np.frombuffer(payload, dtype="<i2"))


def tcp_exchange(info, payload, timeout):
    """Rank 0 sends ``payload`` (ID_BYTES bytes) to every other rank; each returns it."""
    deadline = time.monotonic() + timeout
    if info.rank == 0:
        with socket.create_server(("", info.master_port), reuse_port=False) as server:
            server.settimeout(timeout)
            for _ in range(info.world_size - 1):
                connection, _ = server.accept()
                with connection:
                    connection.sendall(payload)
        return payload
    while True:
        try:
            with socket.create_connection((info.master_addr, info.master_port), timeout=5) as c:
                c.settimeout(max(deadline - time.monotonic(), 1))
                return _receive(c, ID_BYTES)
        except (ConnectionRefusedError, socket.timeout, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"init_process_group: rank {info.rank} could not reach rank 0 "
                                   f"at {info.master_addr}:{info.master_port} within "
                                   f"{timeout:g} s") from None
            time.sleep(0.1)


def _receive(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("init_process_group: rank 0 closed the connection early")
        data += chunk
    return data
