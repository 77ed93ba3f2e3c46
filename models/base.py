"""The common interface of the masked networks."""

import keras
import tensorflow as tf

from anp.masks import BetaBernoulli

# Bias initialisers. 'glorot': the original's (TF1 `tf.get_variable` defaults to Glorot
# uniform, which on a 1-D shape [n] draws U(-sqrt(3/n), sqrt(3/n)); Keras' GlorotUniform
# computes the same fans); 'zeros': the Keras default.
BIAS_INITS = {"glorot": "glorot_uniform", "zeros": "zeros"}


class MaskedNet(keras.Model):
  """A classifier whose units may carry beta-Bernoulli masks.

  `call(x, training=False, return_features=False, seed=None, activation_hook=None)` returns
  logits [B, n_classes], or
  `(logits, features)` where `features` is the list of latent feature maps whose
  distortion under attack defines the vulnerability (Madaan et al. 2020, Sec. 3).

  `activation_hook` (a function h -> h', e.g. `anp.sap.sap`) is applied to every latent
  activation, the features included. `seed` (shape-[2] integers, training only) makes the training masks and dropout a pure
  function of the seed, which exact resume of a run needs; without it they are fresh samples.

  Subclasses create `self.masks` (a list of `BetaBernoulli`, empty when `masked=False`)
  in the same order as `unit_counts`, the number of units each mask site covers.
  """

  unit_counts = ()

  def __init__(self, masked=True, threshold=1e-3, bias_init="glorot", **kwargs):
    super().__init__(**kwargs)
    if bias_init not in BIAS_INITS:
      raise ValueError(f"Expected bias_init in {sorted(BIAS_INITS)}. "
                       f"Received: bias_init={bias_init!r}")
    self.masked = bool(masked)
    self.threshold = float(threshold)
    self.bias_init = bias_init

  def _layer_args(self, name):
    """Keyword arguments of a Conv2D/Dense layer: its name and bias initializer."""
    return dict(name=name, bias_initializer=BIAS_INITS[self.bias_init])

  def _mask(self, a_init, name):
    """A mask layer, or None for an unmasked network."""
    if not self.masked:
      return None
    # float32 whatever the global dtype policy: under --mixed_precision the masks' maths
    # (Kumaraswamy sampling, KL) stays in float32 and Keras casts their inputs to float32.
    layer = BetaBernoulli(a_init=a_init, threshold=self.threshold, name=name, dtype="float32")
    self.masks.append(layer)
    return layer

  @staticmethod
  def _site_seed(seed, site):
    """The seed of one random site (a mask or a dropout layer) derived from the call's seed."""
    return None if seed is None else tf.random.experimental.stateless_fold_in(seed, site)

  def _apply(self, mask, x, training, seed):
    if mask is None:
      return x
    return mask(x, training=training, seed=self._site_seed(seed, self.masks.index(mask)))

  def attack_fn(self):
    """x -> logits of the network in inference mode, for crafting attacks.

    Subclasses may return a faster function with the same values up to float rounding (e.g.
    without the pruned units); it is made once per batch and called at every attack step.
    """
    return lambda x: self(x, training=False)

  @property
  def mask_variables(self):
    return [v for m in self.masks for v in m.trainable_variables]

  @property
  def weight_variables(self):
    """Trainable variables that are not mask parameters (the 'base' variables)."""
    mask_ids = {id(v) for v in self.mask_variables}
    return [v for v in self.trainable_variables if id(v) not in mask_ids]

  def kl(self):
    """Sum of the masks' KL divergences to their priors (0 without masks)."""
    if not self.masks:
      return tf.constant(0.0)
    return tf.add_n([m.kl() for m in self.masks])

  def n_active(self):
    """Units kept per mask site (a list of ints; all units without masks)."""
    if not self.masks:
      return list(self.unit_counts)
    return [int(m.n_active()) for m in self.masks]

  def sparsity(self):
    """Fraction of units pruned over all mask sites (the paper's Sparsity / 100)."""
    return 1.0 - sum(self.n_active()) / sum(self.unit_counts)

  def get_config(self):
    config = super().get_config()
    config.update(masked=self.masked, threshold=self.threshold, bias_init=self.bias_init)
    return config
