"""ANP-VS on your own Keras model.

  masked = add_masks(model)                      # beta-Bernoulli masks (`anp.api.masked`)
  robust = adversarial(masked, "anp_vs", eps=0.3, step_size=0.01, steps=20)   # `anp.api.train`
  robust.compile(); robust.fit(train_ds, epochs=...)
  table = evaluate(masked, test_ds, attacks="strongest")                      # `anp.api.evaluate`
  small = compact(masked)                        # pruned units removed (`anp.api.compact`)
  export(small, "export")                        # SavedModel with serving_default
"""

from anp.api.compact import compact
from anp.api.evaluate import evaluate, export
from anp.api.masked import MaskedModel, add_masks
from anp.api.train import RobustModel, adversarial, paper_optimizers
from anp.errors import UnsupportedLayerError

__all__ = ["MaskedModel", "RobustModel", "UnsupportedLayerError", "adversarial", "add_masks",
           "compact", "evaluate", "export", "paper_optimizers"]
