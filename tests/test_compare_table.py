"""benchmarks/compare.py's table: the backward-alone rows derived from fwd and fwd+bwd rows
(issue 12's attention backward target), without timing anything."""

import pytest

from benchmarks import compare


def test_backward_rows_are_fwd_bwd_minus_fwd():
    modes = ("fp32", "default")
    rows = [
        ("SDPA fwd (4,8,1024,64)", {"fp32": 1.0, "default": 0.9}, {"fp32": 0.5, "default": 0.5}),
        ("SDPA fwd+bwd (4,8,1024,64)", {"fp32": 4.0, "default": 3.0},
         {"fp32": 2.0, "default": 1.5}),
        ("conv2d fwd+bwd (1)", {"fp32": 2.0, "default": 2.0}, {"fp32": 1.0, "default": 1.0}),
        ("LSTM fwd (2)", None, {"error": "failed"}),
        ("LSTM fwd+bwd (2)", {"fp32": 2.0, "default": 2.0}, {"fp32": 1.0, "default": 1.0}),
    ]
    (name, ours, theirs), = compare.backward_rows(rows, modes)     # conv, LSTM: no partner
    assert name == "SDPA bwd (4,8,1024,64) = fwd+bwd - fwd"
    assert ours == pytest.approx({"fp32": 3.0, "default": 2.1})
    assert theirs == pytest.approx({"fp32": 1.5, "default": 1.0})
    text = compare.table(rows, modes, "cuda")
    assert "| SDPA bwd (4,8,1024,64) = fwd+bwd - fwd | 3.000 | 1.500 | 2.00x |" in text
    assert text.count("\n| ") == 6           # 5 rows + 1 derived (the header opens the text)


def test_a_backward_lost_in_noise_gives_no_row():
    modes = ("default",)
    rows = [("x fwd (1)", {"default": 1.0}, {"default": 1.0}),
            ("x fwd+bwd (1)", {"default": 1.5}, {"default": 0.9})]
    assert compare.backward_rows(rows, modes) == []
