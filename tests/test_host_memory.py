"""gpudl.host_memory: after ``import gpudl`` freed large blocks are reused instead of
page-faulted in again, unless GPUDL_HOST_MALLOC=default or the user set glibc's own knobs."""

import ctypes
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import resource, numpy as np, gpudl
from gpudl import host_memory
def round_():
    arrays = [np.ones((n << 20) // 8) for n in range(1, 11)]     # 1..10 MiB, each touched
    del arrays
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_()
print(host_memory.applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc():
    try:
        ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    return True


def _second_round(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GPUDL_HOST_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                          "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env={**clean, **env}, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not _glibc(), reason="the thresholds are glibc's")
def test_freed_blocks_are_reused_after_import():
    applied, faults = _second_round()
    assert applied
    assert faults < 100            # 55 MiB again from the heap (glibc's defaults: ~5,300 faults)


@pytest.mark.skipif(not _glibc(), reason="the thresholds are glibc's")
@pytest.mark.parametrize("env", [{"GPUDL_HOST_MALLOC": "default"},
                                 {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_opt_out_and_user_settings_leave_glibc_alone(env):
    applied, faults = _second_round(**env)
    assert not applied
    assert faults > 1000           # the pages come back from the kernel each round
