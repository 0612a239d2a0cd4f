"""kdforge: distill a large teacher into a small student, then compress, export and measure it."""
from kdforge.api import DistillResult, distill
from kdforge.config import DistillConfig, Recipe
from kdforge.errors import GateFailed, KDForgeError
from kdforge.recipe_file import load_recipe

__version__ = "0.1.0"
__all__ = ["DistillConfig", "DistillResult", "GateFailed", "KDForgeError", "Recipe", "distill", "load_recipe"]
