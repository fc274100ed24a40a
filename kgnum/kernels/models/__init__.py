"""One module per score function; importing this package registers them all.

To add a model: write a module beside these (NumPy reference score/grad plus
either a query form or a pair kernel), register it, import it here.
"""
from . import complex, distmult, rescal, rotate, simple, transe, transe_dot, transr  # noqa: F401
