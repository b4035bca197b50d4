"""tools/graph_probe.py: the GPU run's probe of a captured step against eager. Here, on gpudl's
call recorder, every configuration must agree with eager, and a changed replay must be seen."""

import numpy as np
import pytest

import gpudl as gd
from tools import graph_probe


@pytest.mark.parametrize("config", graph_probe.configurations())
def test_every_capture_replays_like_eager(config):
    result = graph_probe.probe(*config)
    assert result["replay"] is None, result
    assert result["worst"] <= graph_probe.TOLERANCE


def test_a_replay_that_reads_other_parameters_is_reported():
    def nudge(model):
        with gd.no_grad():
            model[0].weight.add_(0.5)
    result = graph_probe.probe("forward", "kept", "current", "numba", after_capture=nudge)
    assert result["replay"] == 0
    assert result["worst"] > 1e-2


def test_nans_and_missing_arrays_are_named():
    want = {"loss": np.float32(1.0), "w": np.ones(3, np.float32), "w.grad": np.ones(3)}
    worst, first_nan, missing = graph_probe._compare(
        {"loss": np.float32(1.0), "w": np.array([1.0, np.nan, 1.0])}, want)
    assert (first_nan, missing) == ("w", ["w.grad"])
    assert worst == np.inf


def test_the_table_has_a_row_per_configuration(tmp_path, capsys):
    path = tmp_path / "probe.md"
    assert graph_probe.main(["--markdown", str(path)]) == 0
    rows = path.read_text().splitlines()
    assert len(rows) == 2 + len(graph_probe.configurations())
    assert all("| ok |" in row for row in rows[2:])
