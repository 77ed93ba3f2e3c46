"""Stochastic Activation Pruning (Dhillon et al., ICLR 2018), a defence applied at inference.

After every latent activation h (the post-ReLU features of a `MaskedNet`), each example draws
r = ceil(frac * n) units with replacement, unit j with probability p_j = |h_j| / sum |h|; the
units drawn at least once are kept and scaled by 1 / (1 - (1 - p_j)^r), so that
E[output] = h; the others are zeroed. The network becomes random at inference: attack it with
expectation over transformation (`--eot_samples`), as Athalye et al. (2018) showed.

Gradient. One sample is out_j = m_j h_j / (1 - (1 - p_j(h))^r) with the kept mask
m_j = [unit j drawn] a constant of the sample (the draw itself is not differentiable). By
default (`differentiable=True`, `--sap_gradient=full`) the gradient flows through p and through
the rescaling as functions of h, as in the attacks of Athalye et al. (2018): for m_j = 1,
  d out_j / d h_k = s_j [j = k] + h_j (d s_j / d p_j) (d p_j / d h_k),
  s_j = 1 / (1 - (1 - p_j)^r),  d s_j / d p_j = -r (1 - p_j)^(r - 1) s_j^2,
  d p_j / d h_k = (sign(h_j) [j = k] - p_j sign(h_k)) / sum |h|
(p clamped at 1 - 1e-7 as in the forward pass); units not kept have no gradient.
No straight-through estimate is needed: given m the sample is differentiable in h almost
everywhere. `differentiable=False` (`--sap_gradient=stopped`) stops the gradient through p and
s, so d out_j / d h_k = m_j s_j [j = k].
The forward value is the same for both.
"""

import math

import tensorflow as tf


def sap(h, frac=1.0, seed=None, differentiable=True):
  """One SAP sample of activations h [B, ...]; the same shape.

  The draw (which units are kept) is a non-differentiable sample: the kept mask is a constant
  of the sample. With `differentiable` the gradient flows through p = |h| / sum |h| and the
  scale 1 / (1 - (1 - p)^r) of the kept units; without it both are constants too.
  """
  shape = tf.shape(h)
  n = math.prod(h.shape[1:])  # static: the units of one example
  flat = tf.reshape(h, [shape[0], n])
  r = max(1, math.ceil(frac * n))
  mag = tf.abs(flat if differentiable else tf.stop_gradient(flat))
  total = tf.reduce_sum(mag, axis=1, keepdims=True)
  p = mag / tf.maximum(total, 1e-30)
  logits = tf.math.log(tf.maximum(tf.stop_gradient(p), 1e-30))
  if seed is None:
    draws = tf.random.categorical(logits, r)
  else:
    draws = tf.random.stateless_categorical(logits, r, seed)
  hits = tf.math.bincount(tf.cast(draws, tf.int32), minlength=n, maxlength=n, axis=-1)
  keep_prob = -tf.math.expm1(r * tf.math.log1p(-tf.minimum(p, 1.0 - 1e-7)))
  # Units not kept (and all-zero rows) divide by 1: the same values, and no inf * 0 = NaN in
  # the gradient of the branch that tf.where drops.
  kept = tf.logical_and(hits > 0, total > 0)
  keep_prob = tf.where(kept, keep_prob, tf.ones_like(keep_prob))
  scale = tf.where(hits > 0, 1.0 / tf.maximum(keep_prob, 1e-30), 0.0)
  scale = tf.where(total > 0, scale, 1.0)  # an all-zero activation stays as it is
  if not differentiable:
    scale = tf.stop_gradient(scale)
  return tf.reshape(flat * scale, shape)


class SapNet:
  """A `MaskedNet` with SAP after each latent activation, in inference mode.

  Call like the net: `(x, training=False, return_features=False)`; every call is a new sample.
  `differentiable=False` stops the gradient through SAP's probabilities and scales (`sap`).
  """

  def __init__(self, net, frac=1.0, differentiable=True):
    self.net = net
    self.frac = float(frac)
    self.differentiable = bool(differentiable)
    self.masks = net.masks
    self.unit_counts = net.unit_counts

  def n_active(self):
    return self.net.n_active()

  def __call__(self, x, training=False, return_features=False):
    del training
    return self.net(x, training=False, return_features=return_features,
                    activation_hook=lambda h: sap(h, self.frac,
                                                  differentiable=self.differentiable))
