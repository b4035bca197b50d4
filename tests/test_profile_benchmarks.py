"""benchmarks/kernel_profile.py's arithmetic on the CPU (its profile needs a GPU), and
benchmarks/host_profile.py and benchmarks/host_overhead.py end to end."""

import pytest

from benchmarks import host_overhead, host_profile, kernel_profile

# the name Numba gives pool_cuda's max_fwd kernel for float32 data and uint8 argmax (its PTX)
MAX_FWD = ("_ZN5gpudl7kernels9pool_cuda13_make_kernels12_3clocals_3e7max_fwdB2v1B104cw51cXTLSUwv"
           "1sDUaKthqaNgoKmjgEhasCBDCg1bcEADwxst6m1ByRAiDEllSAKoKQcmgeQT22p1WPiqWylALVUHSgJ5xrWa"
           "AA_3d_3dE5ArrayIfLi3E1C7mutable7alignedE5ArrayIfLi3E1C7mutable7alignedE5ArrayIhLi3E1"
           "C7mutable7alignedEiiiiiiiixxxx")


@pytest.mark.parametrize("name, short", [
    (MAX_FWD, "pool_cuda.max_fwd"),
    ("_ZN5gpudl7kernels9lstm_cuda5_stepB2v1E5ArrayIfLi2E1C7mutable7alignedE", "lstm_cuda._step"),
    ("cupy_multiply__float_float_float", "cupy_multiply__float_float_float"),
    ("sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_"
     "segment_k_off_kernel__5x_cublas",
     "sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32_warpgroupsiz"),
])
def test_kernel_names_read_as_module_and_kernel(name, short):
    assert kernel_profile.short_name(name) == short


def test_the_table_is_per_step_and_sorted_by_time():
    records = [("b", 4.0, False), ("a", 10.0, False), ("a", 6.0, False),
               ("Memcpy HtoD (Pageable -> Device)", 2.0, True)] * 2
    summary, rows = kernel_profile.kernel_table(records, steps=2, wall_ms=0.5)
    assert summary == {"wall_ms": 0.5, "busy_ms": 0.022, "kernels": 3.0, "copies": 1.0}
    assert rows == [("a", 2.0, 16.0), ("b", 1.0, 4.0),
                    ("Memcpy HtoD (Pageable -> Device)", 1.0, 2.0)]


def test_idle_time_lies_between_activities_and_is_named_by_its_pair():
    # per step: a 0-10, b 12-15 (2 us idle), a 15-20 (none), on another stream c 16-18 (inside
    # a: none), then b 23-24 (3 us after a's end, not c's)
    step = [("a", 0, 10), ("b", 12, 15), ("a", 15, 20), ("c", 16, 18), ("b", 23, 24)]
    timeline = step + [(name, start + 100, end + 100) for name, start, end in step]
    idle, rows = kernel_profile.gap_table(timeline, steps=2)
    assert idle == (2 + 3 + 76 + 2 + 3) / 2          # the 76 us between the steps count too
    assert rows[0][0] == "b -> a" and rows[0][1] == 0.5 and rows[0][2] == 76
    assert ("c -> b", 1.0, 3.0) in rows and ("a -> b", 1.0, 2.0) in rows


def test_without_a_gpu_it_says_what_it_needs(capsys):
    if kernel_profile.gpudl.device() == "cuda":
        pytest.skip("a GPU run profiles for real")
    assert kernel_profile.main([]) == 0
    assert "needs a GPU" in capsys.readouterr().out


def test_the_host_profile_lists_the_step_s_own_functions(capsys):
    assert host_profile.main(["--only", "LeNet", "--steps", "1", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "LeNet-5" in out and "Ordered by: internal time" in out
    listed = out.split("Ordered by")[1]                   # the listed functions are gpudl's
    assert "gpudl/" in listed or "kernels/" in listed     # (gpudl.kernels is kernels/)


def test_the_host_profile_of_compare_rows(capsys):
    assert host_profile.main(["--ops", "max_pool2d 2x2 fwd+bwd (32|no such row", "--steps", "1",
                              "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == 1 and "max_pool2d 2x2 fwd+bwd (32,16,32,32)" in out
    assert "pool.py" in out                     # the pooling entry's own functions are listed


def test_host_overhead_counts_the_same_calls_every_time():
    """At one CPU thread (as the table runs) a step's call count does not vary."""
    import gpudl
    ceiling = gpudl.cpu_threads.ceiling()
    gpudl.cpu_threads.set_ceiling(1)
    try:
        step = host_overhead.step_rows(gpudl, names=("lenet",))["lenet step"]
        counts = {host_overhead.python_calls(step) for _ in range(3)}
    finally:
        gpudl.cpu_threads.set_ceiling(ceiling)
    assert len(counts) == 1 and counts.pop() > 100


def test_host_overhead_table_beside_a_baseline_tree():
    """One round, this tree as its own baseline: every row measured in both processes, the
    call counts equal (each process runs at one CPU thread)."""
    here = str(__import__("pathlib").Path(host_overhead.__file__).parents[1])
    merged = host_overhead.compare([("a", here, "gpudl"), ("b", here, "gpudl")], 1, 1, 1)
    assert merged["a"].keys() == merged["b"].keys() and "transformer step" in merged["a"]
    assert all(merged["a"][row][0] == merged["b"][row][0] for row in merged["a"])
    table = host_overhead.table(merged).splitlines()
    assert len(table) == 2 + len(merged["a"]) and "a calls" in table[0]


def test_host_path_table_and_its_stubbed_launches(capsys):
    """benchmarks/host_path.py on this device: one row per op, every launch stub restored."""
    from benchmarks import host_path
    from gpudl.kernels import launch, pool_cuda
    real = launch.launch
    host_path.main(["--only", "pool2d fwd", "--blocks", "1"])
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| max_pool2d fwd") or
            line.startswith("| avg_pool2d fwd")]
    assert len(rows) == 6 and all(line.endswith("| 0 |") for line in rows)     # no syncs
    assert launch.launch is real and pool_cuda.launch is real
    host_path.main(["--profile", "avg_pool2d fwd+bwd", "--top", "5"])
    assert "== avg_pool2d fwd+bwd (sum) (200 calls)" in capsys.readouterr().out


def test_the_direct_sum_rows_turn_the_fused_winograd_off_for_their_calls_only():
    from gpudl.kernels import conv_winograd_fused_cuda as fused
    seen = []
    step = kernel_profile._direct(lambda: seen.append(fused.ENABLED))
    before = fused.ENABLED
    step()
    assert seen == [False] and fused.ENABLED == before
    names = [name for name, *_ in kernel_profile._workloads("direct sum")]
    assert names == ["conv2d fwd (64,64,56,56) x 64 3x3 p1, gpudl direct sum",
                     "conv2d fwd+bwd (128,128,28,28) x 128 3x3 p1, gpudl direct sum"]


def test_the_unsplit_row_turns_the_causal_key_split_off_for_its_calls_only():
    from gpudl.kernels import attention_tc_cuda
    seen = []
    before = attention_tc_cuda.SPLIT_WAVE
    kernel_profile._unsplit(lambda: seen.append(attention_tc_cuda.SPLIT_WAVE))()
    assert seen == [0] and attention_tc_cuda.SPLIT_WAVE == before > 0
    assert [name for name, *_ in kernel_profile._workloads("unsplit")] == [
        "causal SDPA fwd (4,8,1024,64), gpudl unsplit"]
    first = [name for name, *_ in kernel_profile._workloads(None)][:3]
    assert first[0].startswith("conv2d fwd (64,64,56,56)")      # issue 12's rows come first
