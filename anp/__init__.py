"""anp: adversarially robust and sparse neural networks (ANP-VS, ICML 2020) in TF2/Keras.

The Python API on any Keras model (`anp.api`) is reachable from here and loads TensorFlow on
first use: anp.add_masks, anp.adversarial, anp.evaluate, anp.compact, anp.export,
anp.paper_optimizers, anp.MaskedModel, anp.RobustModel, anp.UnsupportedLayerError.
"""

_API = ("MaskedModel", "RobustModel", "UnsupportedLayerError", "adversarial", "add_masks",
        "compact", "evaluate", "export", "paper_optimizers")


def __getattr__(name):
  if name in _API:
    from anp import api
    return getattr(api, name)
  raise AttributeError(f"module 'anp' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_API))
