"""anp: adversarially robust and sparse neural networks (ANP-VS, ICML 2020) in TF2/Keras."""

import importlib.util
import os


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
