"""What the installed torch may lack that CI's torch 2.13 has (a GPU machine may carry an older
one: torch 2.11 in session 12), found by trying it, never by version: a test whose reference
torch cannot give skips, saying why, and runs unchanged where torch has the feature."""

import contextlib
import re

import pytest

torch = pytest.importorskip("torch")

# torch's two wordings: "derivative for aten::X is not implemented" (an op without an autograd
# formula) and "the derivative for 'X' is not implemented." (a formula torch declares missing)
_NO_DERIVATIVE = re.compile(r"derivative for \S+ is not implemented")


@contextlib.contextmanager
def skip_where_torch_lacks_the_derivative():
    """Run torch's backward; skip the test if torch has no derivative for an op in it (older
    torch: grid_sampler_2d_backward's, aminmax's, nextafter's)."""
    try:
        yield
    except RuntimeError as error:                 # NotImplementedError is a RuntimeError
        if _NO_DERIVATIVE.search(str(error)):
            pytest.skip(f"torch {torch.__version__} has no such derivative: {error}")
        raise


def torch_norms_take_bias():
    """Whether torch's norm layers take ``bias=`` and show it in their repr (torch 2.11's
    BatchNorm and InstanceNorm refuse the keyword, and no norm's repr shows it)."""
    try:
        torch.nn.BatchNorm1d(2, bias=False)
    except TypeError:
        return False
    return "bias=" in repr(torch.nn.GroupNorm(1, 2))


def torch_pads_a_forced_sci_mode():
    """Whether torch's repr under ``set_printoptions(sci_mode=...)`` pads every value to the
    width of the forced format (2.13 does; an older torch kept the width of the format it would
    have chosen)."""
    try:
        torch.set_printoptions(sci_mode=True)
        return repr(torch.tensor([0.1, -0.2])).startswith("tensor([ 1.0000e-01")
    finally:
        torch.set_printoptions(profile="default")
