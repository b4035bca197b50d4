"""The simulator suite's setup: blocks of simulated threads run as sim_blocks.py says (barrier-free
blocks in turn on the calling thread, the others as greenlets on it, switched where one waits),
and the warnings the simulator's arithmetic makes on purpose filtered."""

from gpudl import backend

if backend.SIMULATOR:
    import sim_blocks
    sim_blocks.install()


def pytest_configure(config):
    # the simulator runs the dropout kernel's xoroshiro128+ steps on NumPy uint64 scalars, which
    # warn when they wrap (the wrap is the arithmetic)
    config.addinivalue_line(
        "filterwarnings", r"ignore:overflow encountered in scalar:RuntimeWarning:.*dropout_cuda")
    # numba.cuda.random under the simulator (the dropout tests' reference draws) decorates its
    # functions with nopython=False, which Numba warns about at import
    config.addinivalue_line("filterwarnings", r"ignore:.*'nopython=False' was supplied")

