"""``torch.nn.utils.convert_parameters``: parameters to one vector and back, under torch's
module path."""

from . import parameters_to_vector, vector_to_parameters  # noqa: F401
