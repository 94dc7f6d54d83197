"""stablegen: train generative models stably."""

from .api import Run, load, open_run, train
from .base import Batch, DataInfo, Method, Phase
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["Batch", "DataInfo", "Method", "Phase", "Recipe", "RecipeError", "Run", "load", "load_recipe",
           "open_run", "train"]
__version__ = "0.1.0"
