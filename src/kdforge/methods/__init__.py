"""Training methods; each supplies step(batch) -> named losses to the one loop."""
from kdforge.methods import standard, supervised  # noqa: F401  (registers methods)
from kdforge.methods.base import Method

__all__ = ["Method"]
