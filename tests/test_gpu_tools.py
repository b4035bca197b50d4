"""tools/kernel_cache_check.py's verdict (its processes need a GPU): on fabricated reports of a
launcher's two processes, it passes only when the second loaded every kernel (Numba's cache
hits, or no PTX compiled again) and matched the bits; and benchmarks/plot_gpu_runs.py."""

import pytest

from tools import kernel_cache_check

FIRST = {"seconds": 9.0, "bits": [1.5, 2.0, 3.25], "kernels": 6, "hits": 0, "misses": 6,
         "ptx_compiles": 6}
LOADED = {"seconds": 1.0, "bits": [1.5, 2.0, 3.25], "kernels": 6, "hits": 6, "misses": 0,
          "ptx_compiles": 0}


@pytest.mark.parametrize("launcher, second, ok", [
    ("numba", LOADED, True),
    ("cupy", LOADED, True),
    ("numba", {**LOADED, "hits": 4, "misses": 2}, False),
    ("cupy", {**LOADED, "ptx_compiles": 2}, False),
    ("numba", {**LOADED, "bits": [1.5, 2.0, 3.5]}, False),
    ("cupy", {**LOADED, "bits": [1.5, 2.0, 3.5]}, False),
])
def test_the_verdict(monkeypatch, capsys, launcher, second, ok):
    other = "cupy" if launcher == "numba" else "numba"
    monkeypatch.setattr(kernel_cache_check, "run",
                        lambda directory: {launcher: (FIRST, second), other: (FIRST, LOADED)})
    assert kernel_cache_check.main() == (0 if ok else 1)
    assert ("ok" if ok else "FAILED") in capsys.readouterr().out


@pytest.mark.parametrize("launcher, field", [("numba", "misses"), ("cupy", "ptx_compiles")])
def test_a_first_process_that_compiled_nothing_fails(launcher, field):
    nothing = {**FIRST, field: 0}
    assert kernel_cache_check.problems(launcher, nothing, {**LOADED, "hits": 0})


def test_the_gpu_runs_table_reads_and_plots(tmp_path):
    from benchmarks import plot_gpu_runs
    runs, rows = plot_gpu_runs.read()
    assert runs[0] == "session 12" and len(rows) >= 10
    for name, target, values in rows:
        assert target in (1.0, 1.5, 2.0) and len(values) == len(runs)
        assert all(v is None or 0.1 < v < 20 for v in values), name
    pytest.importorskip("matplotlib")
    out = plot_gpu_runs.plot(runs, rows, tmp_path / "runs.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
