"""The NCCL backend with a world of one (NCCL refuses two ranks on one GPU): the collectives and
DistributedDataParallel on CUDA tensors. Runs on a GPU machine (tools/gpu_check.sh); skipped
elsewhere. The bucketing and overlap logic it shares with MPI is tested on CPU ranks, and the
backend's calls into CuPy against a stand-in (test_nccl_offline.py)."""

import os

import numpy as np
import pytest

import gpudl as gd
import gpudl.distributed as dist
from gpudl import nn, optim
from gpudl.nn.parallel import DistributedDataParallel

def _missing():
    """Why this machine cannot run the tests (None when it can), naming the missing piece."""
    if not gd.cuda.is_available():
        return "no GPU here (run on a GPU machine: tools/gpu_check.sh)"
    if gd.device() != "cuda":
        return "GPUDL_DEVICE is not cuda"
    try:
        from gpudl.distributed import backends
        backends._import_nccl()
    except ImportError as exc:
        return f"a GPU is here but NCCL is not usable: {exc}"
    return None


# tools/gpu_check.sh sets it: on the GPU machine a skip would hide a broken NCCL set-up, so the
# tests run and fail there with init_process_group's error instead
REQUIRED = os.environ.get("GPUDL_NCCL_REQUIRED") == "1"
pytestmark = pytest.mark.skipif(not REQUIRED and _missing() is not None, reason=str(_missing()))


@pytest.fixture
def nccl_group():
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_collectives_with_a_world_of_one(nccl_group):
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "nccl")
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX, dist.ReduceOp.MIN):
        t = gd.tensor(values, device="cuda")
        dist.all_reduce(t, op=op)
        np.testing.assert_array_equal(t.numpy(), values)
    t = gd.tensor(values, device="cuda")
    dist.broadcast(t, src=0)
    np.testing.assert_array_equal(t.numpy(), values)
    gathered = [gd.zeros((2, 3), device="cuda")]
    dist.all_gather(gathered, gd.tensor(values, device="cuda"), async_op=True).wait()
    np.testing.assert_array_equal(gathered[0].numpy(), values)
    out = gd.zeros((2, 3), device="cuda")
    dist.reduce_scatter(out, [gd.tensor(values, device="cuda")])
    np.testing.assert_array_equal(out.numpy(), values)
    dist.barrier()
    with pytest.raises(TypeError, match="CUDA tensors"):
        dist.all_reduce(gd.tensor(values, device="cpu"))


def test_ddp_with_a_world_of_one_trains_like_the_plain_model(nccl_group):
    def model():
        gd.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 4)).to("cuda")
    ddp, plain = DistributedDataParallel(model(), bucket_cap_mb=0.25), model()
    assert len(ddp.reducer.buckets) > 1
    rng = np.random.default_rng(0)
    for m in (ddp, plain):
        opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        for step in range(3):
            x = gd.tensor(rng.standard_normal((16, 8)).astype(np.float32), device="cuda")
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        rng = np.random.default_rng(0)
    for p, q in zip(ddp.module.parameters(), plain.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6, atol=1e-7)
