"""Training methods; each supplies step(batch) -> named losses to the one loop."""
from kdforge.methods import born_again, data_free, multi_teacher, mutual, standard, supervised  # noqa: F401  (registers methods)
from kdforge.methods import embedding, reasoning, sequence  # noqa: F401  (embedding; LM: token_kd, sequence_kd, gkd, reasoning)
from kdforge.methods.base import Method

__all__ = ["Method"]
