"""tools/kernel_cache_check.py's verdict (its two processes need a GPU): on fabricated reports
of the two processes, it passes only when the second loaded every kernel and matched the bits."""

import pytest

from tools import kernel_cache_check

FIRST = {"seconds": 9.0, "bits": [1.5, 2.0, 3.25], "kernels": 6, "hits": 0, "misses": 6}


@pytest.mark.parametrize("second, ok", [
    ({"seconds": 1.0, "bits": [1.5, 2.0, 3.25], "kernels": 6, "hits": 6, "misses": 0}, True),
    ({"seconds": 5.0, "bits": [1.5, 2.0, 3.25], "kernels": 6, "hits": 4, "misses": 2}, False),
    ({"seconds": 1.0, "bits": [1.5, 2.0, 3.5], "kernels": 6, "hits": 6, "misses": 0}, False),
])
def test_the_verdict(monkeypatch, capsys, second, ok):
    reports = iter([FIRST, second])
    monkeypatch.setattr(kernel_cache_check, "run", lambda directory: next(reports))
    assert kernel_cache_check.main() == (0 if ok else 1)
    assert ("ok" if ok else "FAILED") in capsys.readouterr().out


def test_a_first_process_that_compiled_nothing_fails(monkeypatch, capsys):
    nothing = {**FIRST, "kernels": 0, "misses": 0}
    monkeypatch.setattr(kernel_cache_check, "run", lambda directory: nothing)
    assert kernel_cache_check.main() == 1
    assert "compiled nothing" in capsys.readouterr().out


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
