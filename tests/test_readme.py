"""Every Python block in README.md runs as written (the README is part of the contract)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    namespace = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    if "accuracy" in namespace:
        assert namespace["accuracy"] > 0.8          # it learned: chance is 0.1
    if "loss" in namespace and index == 0:
        assert namespace["loss"].item() < 1e-3


def test_readme_has_blocks():
    assert len(BLOCKS) >= 3
