"""Stochastic Activation Pruning (Dhillon et al., ICLR 2018), a defence applied at inference.

After every latent activation h (the post-ReLU features of a `MaskedNet`), each example draws
r = ceil(frac * n) units with replacement, unit j with probability p_j = |h_j| / sum |h|; the
units drawn at least once are kept and scaled by 1 / (1 - (1 - p_j)^r), so that
E[output] = h; the others are zeroed. The network becomes random at inference: attack it with
expectation over transformation (`--eot_samples`), as Athalye et al. (2018) showed.
"""

import math

import tensorflow as tf


def sap(h, frac=1.0, seed=None):
  """One SAP sample of activations h [B, ...]; the same shape. Sampling is not differentiated
  (the kept set and its scales are constants of the sample)."""
  shape = tf.shape(h)
  n = math.prod(h.shape[1:])  # static: the units of one example
  flat = tf.reshape(h, [shape[0], n])
  r = max(1, math.ceil(frac * n))
  mag = tf.abs(tf.stop_gradient(flat))
  total = tf.reduce_sum(mag, axis=1, keepdims=True)
  p = mag / tf.maximum(total, 1e-30)
  logits = tf.math.log(tf.maximum(p, 1e-30))
  if seed is None:
    draws = tf.random.categorical(logits, r)
  else:
    draws = tf.random.stateless_categorical(logits, r, seed)
  hits = tf.math.bincount(tf.cast(draws, tf.int32), minlength=n, maxlength=n, axis=-1)
  keep_prob = -tf.math.expm1(r * tf.math.log1p(-tf.minimum(p, 1.0 - 1e-7)))
  scale = tf.where(hits > 0, 1.0 / tf.maximum(keep_prob, 1e-30), 0.0)
  scale = tf.where(total > 0, scale, 1.0)  # an all-zero activation stays as it is
  return tf.reshape(flat * tf.stop_gradient(scale), shape)


class SapNet:
  """A `MaskedNet` with SAP after each latent activation, in inference mode.

  Call like the net: `(x, training=False, return_features=False)`; every call is a new sample.
  """

  def __init__(self, net, frac=1.0):
    self.net = net
    self.frac = float(frac)
    self.masks = net.masks
    self.unit_counts = net.unit_counts

  def n_active(self):
    return self.net.n_active()

  def __call__(self, x, training=False, return_features=False):
    del training
    return self.net(x, training=False, return_features=return_features,
                    activation_hook=lambda h: sap(h, self.frac))
