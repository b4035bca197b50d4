"""gpudl.func: torch.func's names that gpudl has (``functional_call``)."""

from .nn.utils.stateless import functional_call  # noqa: F401

__all__ = ["functional_call"]
