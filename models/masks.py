"""Beta-Bernoulli dropout masks (Lee et al. 2018) as used by ANP-VS (Madaan et al. 2020).

Each unit (a dense input or a conv channel) k has a keep probability
pi_k ~ Kumaraswamy(a_k, b_k), the variational posterior of a Beta(alpha, 1) prior, and
a mask z_k ~ Bernoulli(pi_k) relaxed with a concrete (RelaxedBernoulli) distribution
so that gradients reach a and b. At inference the mask is deterministic:
z_k = E[pi_k], set to 0 below a threshold, which is what "pruned" means.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from models import replica_rows

EULER_GAMMA = 0.5772156649015329

# Uniform noise is drawn from [_U_EPS, 1 - _U_EPS]: 1 - 1e-10, the original's bound,
# rounds to 1.0 in float32 and then log(u) = 0 sends log(pi) to -inf.
_U_EPS = 1e-6
# log(pi) is kept at or below log(1 - 1e-6): a sampled pi that rounds to 1.0 is what turns
# logit(pi) into inf and the original's masks into NaN.
_MAX_LOG_PI = float(np.log1p(-1e-6))


def _softplus_a(a_uc):
  """a = softplus(max(a_uc, -10)), as in the original code."""
  return tf.nn.softplus(tf.maximum(a_uc, -10.0))


def _softplus_b(b_uc):
  """b = softplus(clip(b_uc, -10, 50)), as in the original code."""
  return tf.nn.softplus(tf.clip_by_value(b_uc, -10.0, 50.0))


def kumaraswamy_mean(a, b):
  """E[pi] for pi ~ Kumaraswamy(a, b): b * B(1 + 1/a, b), computed with lgamma."""
  return tf.exp(tf.math.log(b) + tfp.math.lbeta(1.0 + 1.0 / a, b))


def kl_kumaraswamy_beta(a, b, alpha):
  """Closed-form KL(Kumaraswamy(a, b) || Beta(alpha, 1)), elementwise.

  Nalisnick & Smyth (2017), Eq. (12); the infinite series vanishes for a Beta(alpha, 1)
  prior, so the expression is exact:
    (1 - alpha/a) (-gamma - psi(b) - 1/b) + log(a b / alpha) - (b - 1)/b.
  """
  return ((1.0 - alpha / a) * (-EULER_GAMMA - tf.math.digamma(b) - 1.0 / b)
          + tf.math.log(a * b / alpha) - (b - 1.0) / b)


def log1mexp(x):
  """log(1 - exp(x)) for x < 0, with finite gradients on both branches.

  `tfp.math.log1mexp` selects between two forms with `tf.where`; the unselected form's
  infinite gradient then turns into NaN. Feeding each form only inputs from its own
  range (the double-where trick) keeps both gradients finite.
  """
  x = tf.convert_to_tensor(x)
  near_zero = x > -np.log(2.0)
  x_near = tf.where(near_zero, x, -1.0)
  x_far = tf.where(near_zero, -1.0, x)
  return tf.where(near_zero, tf.math.log(-tf.math.expm1(x_near)),
                  tf.math.log1p(-tf.exp(x_far)))


def _uniform(shape, seed):
  """Uniform noise in [_U_EPS, 1 - _U_EPS]; stateless when `seed` (shape [2] ints) is given."""
  if seed is None:
    return tf.random.uniform(shape, _U_EPS, 1.0 - _U_EPS)
  return tf.random.stateless_uniform(shape, seed, _U_EPS, 1.0 - _U_EPS)


def sample_log_pi(a, b, seed=None):
  """log pi for pi ~ Kumaraswamy(a, b) by the inverse CDF, in log space.

  pi = (1 - u^(1/b))^(1/a)  =>  log pi = log1mexp(log(u) / b) / a.
  `tfd.Kumaraswamy(a, b).sample()` followed by logit(pi) gives non-finite gradients at
  the original initialisation; this form stays finite for all a, b in the clipped range.
  """
  u = _uniform(tf.shape(a), seed)
  log_pi = log1mexp(tf.math.log(u) / b) / a
  return tf.minimum(log_pi, _MAX_LOG_PI)


@keras.saving.register_keras_serializable(package="anp")
class BetaBernoulli(keras.layers.Layer):
  """Multiplies the last axis of its input by a learned beta-Bernoulli mask.

  Input: [batch, ..., units] (dense features [B, units] or NHWC maps [B, H, W, units]).
  Output: same shape. In training each example draws its own relaxed mask
  z ~ RelaxedBernoulli(temperature, logits=logit(pi)) with one pi ~ Kumaraswamy(a, b)
  shared by the batch (as in the original); at inference z = E[pi], zeroed where
  E[pi] <= threshold.

  Args:
    a_init: initial raw value of a (a = softplus(a_uc)); -1.0 (LeNet), 2.0 (VGG conv).
    b_init: initial raw value of b; 0.5413 gives b = 1.
    alpha: parameter of the Beta(alpha, 1) prior.
    temperature: temperature of the concrete relaxation.
    threshold: E[pi] at or below which a unit counts as pruned (the original's --thres).
  """

  def __init__(self, a_init=-1.0, b_init=0.5413, alpha=1e-4, temperature=0.1,
               threshold=1e-3, **kwargs):
    super().__init__(**kwargs)
    if not alpha > 0:
      raise ValueError(f"Expected alpha > 0. Received: alpha={alpha}")
    if not temperature > 0:
      raise ValueError(f"Expected temperature > 0. Received: temperature={temperature}")
    if not 0 <= threshold < 1:
      raise ValueError(f"Expected 0 <= threshold < 1. Received: threshold={threshold}")
    self.a_init = float(a_init)
    self.b_init = float(b_init)
    self.alpha = float(alpha)
    self.temperature = float(temperature)
    self.threshold = float(threshold)

  def build(self, input_shape):
    units = input_shape[-1]
    if units is None:
      raise ValueError("BetaBernoulli needs a known last dimension. "
                       f"Received: input_shape={input_shape}")
    self.units = int(units)
    self.a_uc = self.add_weight(
        name="a_uc", shape=(self.units,),
        initializer=keras.initializers.Constant(self.a_init))
    self.b_uc = self.add_weight(
        name="b_uc", shape=(self.units,),
        initializer=keras.initializers.Constant(self.b_init))

  @property
  def a(self):
    return _softplus_a(tf.convert_to_tensor(self.a_uc))

  @property
  def b(self):
    return _softplus_b(tf.convert_to_tensor(self.b_uc))

  def expected_pi(self):
    """E[pi] per unit, shape [units]."""
    return kumaraswamy_mean(self.a, self.b)

  def inference_mask(self):
    """The deterministic mask of inference: E[pi], zeroed where E[pi] <= threshold."""
    e_pi = self.expected_pi()
    return tf.where(e_pi > self.threshold, e_pi, tf.zeros_like(e_pi))

  def keep(self):
    """Boolean [units]: the units that survive pruning."""
    return self.expected_pi() > self.threshold

  def n_active(self):
    """Number of units that survive pruning (int32 scalar)."""
    return tf.reduce_sum(tf.cast(self.keep(), tf.int32))

  def kl(self):
    """KL(q(pi) || Beta(alpha, 1)) summed over units (scalar, >= 0)."""
    return tf.reduce_sum(kl_kumaraswamy_beta(self.a, self.b, self.alpha))

  def sample_mask(self, batch_size, seed=None):
    """A relaxed training mask, shape [batch_size, units].

    `seed`: optional shape-[2] integer seed; the same seed gives the same mask (exact resume).
    """
    pi_seed, noise_seed = (None, None) if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    log_pi = sample_log_pi(self.a, self.b, pi_seed)
    logits = log_pi - log1mexp(log_pi)
    logits = tf.broadcast_to(logits, [batch_size, self.units])
    # RelaxedBernoulli(t, logits) is sigmoid of Logistic(logits / t, 1 / t). Sampling the
    # logistic and applying the sigmoid ourselves gives the same distribution; TFP's
    # `RelaxedBernoulli.sample()` returned NaN gradients here for logits above ~7 at t=0.1.
    # Logistic(loc, scale) = loc + scale * logit(u).
    # Per-example noise: under tf.distribute, this replica's rows of the global batch's draw.
    u = (_uniform(tf.shape(logits), None) if noise_seed is None else
         replica_rows.per_example_draw(lambda s: _uniform(s, noise_seed), tf.shape(logits)))
    noise = (logits + tf.math.log(u) - tf.math.log1p(-u)) / self.temperature
    return tf.sigmoid(noise)

  def call(self, x, training=False, seed=None):
    if training:
      z = self.sample_mask(tf.shape(x)[0], seed)
      z = tf.reshape(z, tf.concat([tf.shape(z)[:1], tf.ones([tf.rank(x) - 2], tf.int32),
                                   [self.units]], 0))
    else:
      z = self.inference_mask()
    return x * tf.cast(z, x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(a_init=self.a_init, b_init=self.b_init, alpha=self.alpha,
                  temperature=self.temperature, threshold=self.threshold)
    return config
