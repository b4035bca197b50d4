"""``gd.linalg``: torch.linalg's vector norm (the maths in gpudl.ops.linalg)."""

from .tensor_math import vector_norm  # noqa: F401
