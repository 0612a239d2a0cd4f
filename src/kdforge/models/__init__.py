"""Built-in models, looked up by recipe key through `kdforge.registry.MODELS`."""
from kdforge.models import students as _students  # noqa: F401  (registers "hf")
from kdforge.models.small import CNN, MLP, count_parameters

__all__ = ["CNN", "MLP", "count_parameters"]
