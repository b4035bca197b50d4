"""asv suite over the CPU size grid of benchmarks/grid.py (the rows of
``python -m benchmarks.compare --grid``), gpudl only; the side-by-side ratios come from compare."""

import gpudl as gd

from .grid import GRID


class Grid:
    params = [name for name, _ in GRID]
    param_names = ["workload"]
    timeout = 300

    def setup(self, name):
        if gd.device() != "cpu":
            raise NotImplementedError("the grid is the CPU path's")
        gd.manual_seed(0)
        self.step = dict(GRID)[name](gd)
        self.step()                                 # warm-up: Numba compiles, caches fill

    def time_step(self, name):
        self.step()
