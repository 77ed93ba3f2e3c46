"""The common interface of the masked networks."""

import keras
import tensorflow as tf

from models.initializers import BIAS_INITS
from models.bayesian import BayesConv2D, BayesDense
from models.masks import BetaBernoulli
from models.subnet import (SubnetConv2D, SubnetDense, TopKMask, fixed_masks, hydra_masks,
                           subnet_layers)

# Seeds of the Bayesian layers are folded in from here on, apart from the mask and dropout
# sites (numbered from 0).
_BAYES_SITES = 1000


class MaskedNet(keras.Model):
  """A classifier whose units may carry beta-Bernoulli masks.

  `call(x, training=False, return_features=False, seed=None, activation_hook=None)` returns
  logits [B, n_classes], or
  `(logits, features)` where `features` is the list of latent feature maps whose
  distortion under attack defines the vulnerability (Madaan et al. 2020, Sec. 3).

  `activation_hook` (a function h -> h', e.g. `anp.evaluation.sap.sap`) is applied to every latent
  activation, the features included. `seed` (shape-[2] integers, training only) makes the
  training masks and dropout a pure function of the seed, which exact resume of a run needs;
  without it they are fresh samples.

  Subclasses create `self.masks` (a list of `BetaBernoulli`, empty when `masked=False`)
  in the same order as `unit_counts`, the number of units each mask site covers, and their
  Conv2D / Dense layers with `_conv` / `_dense`.

  `bayes=(prior_sigma, init_sigma)` makes those layers mean-field Gaussian
  (`models.bayesian`, Adv-BNN): every call, inference included, draws one weight sample per layer,
  stateless from `seed` when given (in either mode), and `kl()` adds their KL to the prior.

  `hydra` (None, 'weight' or 'channel') builds HYDRA's pruning (`models.subnet`, Sehwag et al.
  2020) with `prune_ratio` (fraction removed per layer): 'weight' makes every conv and dense
  layer a Subnet layer (a score per weight), 'channel' puts a `TopKMask` (a score per unit) at
  every mask site instead of a beta-Bernoulli mask.
  """

  unit_counts = ()

  def __init__(self, masked=True, threshold=1e-3, bias_init="glorot", bayes=None,
               hydra=None, prune_ratio=0.0, **kwargs):
    super().__init__(**kwargs)
    if bias_init not in BIAS_INITS:
      raise ValueError(f"Expected bias_init in {sorted(BIAS_INITS)}. "
                       f"Received: bias_init={bias_init!r}")
    if bayes is not None and len(bayes) != 2:
      raise ValueError("Expected bayes=(prior_sigma, init_sigma) or None. "
                       f"Received: bayes={bayes!r}")
    if hydra not in (None, "weight", "channel"):
      raise ValueError(f"Expected hydra in (None, 'weight', 'channel'). Received: hydra={hydra!r}")
    if hydra and (masked or bayes is not None):
      raise ValueError("Expected one of beta-Bernoulli masks (masked), Bayesian layers (bayes) and "
                       f"HYDRA's. Received: masked={masked}, bayes={bayes!r}, hydra={hydra!r}")
    self.hydra = hydra
    self.prune_ratio = float(prune_ratio)
    self.masked = bool(masked)
    self.threshold = float(threshold)
    self.bias_init = bias_init
    self.bayes = None if bayes is None else tuple(float(b) for b in bayes)
    self.bayes_layers = []

  def _layer_args(self, name):
    """Keyword arguments of a Conv2D/Dense layer: its name and bias initializer."""
    return dict(name=name, bias_initializer=BIAS_INITS[self.bias_init])

  def _conv(self, filters, kernel_size, name, **kwargs):
    """A Conv2D layer, a `BayesConv2D` for a Bayesian network, HYDRA's `SubnetConv2D`
    with hydra='weight'."""
    if self.hydra == "weight":
      return SubnetConv2D(filters, kernel_size, prune_ratio=self.prune_ratio, **kwargs,
                          **self._layer_args(name))
    if self.bayes is None:
      return keras.layers.Conv2D(filters, kernel_size, **kwargs, **self._layer_args(name))
    return self._bayesian(BayesConv2D(filters, kernel_size, *self.bayes, **kwargs,
                                      **self._layer_args(name)))

  def _dense(self, units, name, **kwargs):
    """A Dense layer, a `BayesDense` for a Bayesian network, HYDRA's `SubnetDense` with
    hydra='weight'."""
    if self.hydra == "weight":
      return SubnetDense(units, prune_ratio=self.prune_ratio, **kwargs, **self._layer_args(name))
    if self.bayes is None:
      return keras.layers.Dense(units, **kwargs, **self._layer_args(name))
    return self._bayesian(BayesDense(units, *self.bayes, **kwargs, **self._layer_args(name)))

  def _bayesian(self, layer):
    self.bayes_layers.append(layer)
    return layer

  def _layer(self, layer, x, seed):
    """Applies a Conv2D/Dense layer; a Bayesian one gets its own seed derived from `seed`."""
    if self.bayes is None:
      return layer(x)
    return layer(x, seed=self._layer_seed(layer, seed))

  def _layer_seed(self, layer, seed):
    """The seed of a Bayesian layer's weight sample derived from the call's `seed` (or None)."""
    return None if seed is None else tf.random.experimental.stateless_fold_in(
        seed, _BAYES_SITES + self.bayes_layers.index(layer))

  def _mask(self, a_init, name):
    """A mask layer (HYDRA's TopKMask with hydra='channel'), or None for an unmasked network."""
    if self.hydra == "channel":
      layer = TopKMask(prune_ratio=self.prune_ratio, name=name)
      self.masks.append(layer)
      return layer
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

  def attack_fn(self, dtype=tf.float32):
    """x -> logits of the network in inference mode, for crafting attacks.

    Subclasses may return a faster function with the same values up to float rounding (e.g.
    without the pruned units); it is made once per batch and called at every attack step.
    A Bayesian network's function also takes `seed` (one weight sample per call); HYDRA's
    top-k masks are computed here, once per batch. `dtype`: only LeNet's compact function
    computes in another type than float32.
    """
    if tf.as_dtype(dtype) != tf.float32:
      raise ValueError(f"Expected dtype float32 for {type(self).__name__}'s attack function "
                       f"(only LeNet5's compact one computes in bfloat16). Received: {dtype}")
    if self.bayes is not None:
      return lambda x, seed=None: self(x, training=False, seed=seed)
    if not self.hydra:
      return lambda x: self(x, training=False)
    masks = hydra_masks(self)

    def logits(x):
      with fixed_masks(self, masks):
        return self(x, training=False)

    return logits

  @property
  def mask_variables(self):
    """Mask parameters: the beta-Bernoulli masks', or HYDRA's scores."""
    return ([v for m in self.masks for v in m.trainable_variables]
            + [layer.scores for layer in subnet_layers(self)])

  @property
  def weight_variables(self):
    """Trainable variables that are not mask parameters (the 'base' variables)."""
    mask_ids = {id(v) for v in self.mask_variables}
    return [v for v in self.trainable_variables if id(v) not in mask_ids]

  @property
  def decayed_variables(self):
    """The weight variables under weight decay: all but the Bayesian log-sigmas."""
    if not self.bayes_layers:
      return self.weight_variables
    sigma_ids = {id(v) for layer in self.bayes_layers for v in layer.log_sigma_variables}
    return [v for v in self.weight_variables if id(v) not in sigma_ids]

  @property
  def has_kl(self):
    """Whether `kl()` has terms: beta-Bernoulli masks or Bayesian layers."""
    return any(isinstance(m, BetaBernoulli) for m in self.masks) or bool(self.bayes_layers)

  def kl(self):
    """Sum of the masks' and Bayesian layers' KL divergences to their priors (0 without)."""
    if not self.has_kl:
      return tf.constant(0.0)
    return tf.add_n([m.kl() for m in self.masks] + [b.kl() for b in self.bayes_layers])

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
    config.update(masked=self.masked, threshold=self.threshold, bias_init=self.bias_init,
                  bayes=None if self.bayes is None else list(self.bayes),
                  hydra=self.hydra, prune_ratio=self.prune_ratio)
    return config
