__version__ = "0.0.1"

# One import for users (nbs/library.ipynb lists what it re-exports):
# from symbolic_l2o import create_optimizer, ...
from .library import *
