"""anp: adversarially robust and sparse neural networks (ANP-VS, ICML 2020) in TF2/Keras.

The Python API on any Keras model (`anp.api`) is reachable from here and loads TensorFlow on
first use: anp.add_masks, anp.adversarial, anp.evaluate, anp.compact, anp.export,
anp.paper_optimizers, anp.MaskedModel, anp.RobustModel, anp.UnsupportedLayerError.
"""

import importlib.util
import os

_API = ("MaskedModel", "RobustModel", "UnsupportedLayerError", "adversarial", "add_masks",
        "compact", "evaluate", "export", "paper_optimizers")


def _check_siblings():
  """ImportError when the top-level `models` or `attacks` that anp imports is another
  distribution's package of that name rather than the one beside `anp` (pyproject.toml)."""
  root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
  for name in ("models", "attacks"):
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec and spec.origin else None
    if not origin or os.path.dirname(os.path.dirname(os.path.realpath(origin))) != root:
      raise ImportError(f"anp needs the package {name!r} of its checkout ({root}); "
                        f"{name!r} is {origin or 'missing'}. Install anp with "
                        "`pip install -e .` in a virtual environment of its own.")


_check_siblings()


def __getattr__(name):
  if name in _API:
    from anp import api
    return getattr(api, name)
  raise AttributeError(f"module 'anp' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_API))
