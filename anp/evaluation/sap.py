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

import numpy as np
import tensorflow as tf


def drawn(p, r, seed=None):
  """bool [B, n]: the units that r draws with replacement from the categorical rows p hit.

  p: [B, n] probabilities, each row summing to 1 (or all zero: nothing is drawn). r: a Python
  int. seed: optional stateless seed (shape [2]).

  Inverse-CDF sampling with the draws sorted: r + 1 standard exponentials E, and
  u_k = (E_1 + ... + E_k) / (E_1 + ... + E_{r+1}), k <= r, are the order statistics of r
  independent uniforms (Devroye, Non-Uniform Random Variate Generation, 1986, V.2). Unit j is
  hit iff some u_k lies in [c_{j-1}, c_j), c the cumulative sum of p: one search of the sorted
  u per unit. The distribution is that of r calls of `tf.random.categorical`, at about half its
  time on the [1000, 11520] activations of LeNet5's first layer (`bench/ops.py`: `sap_draw`).
  """
  rows = tf.shape(p)[0]
  shape = tf.stack([rows, r + 1])
  if seed is None:
    uniform = tf.random.uniform(shape, dtype=p.dtype)
  else:
    uniform = tf.random.stateless_uniform(shape, seed, dtype=p.dtype)
  sums = tf.math.cumsum(-tf.math.log1p(-uniform), axis=1)  # uniform < 1: finite
  # A draw that rounds to 1 stays below it, in the last unit of positive p.
  below_one = np.nextafter(p.dtype.as_numpy_dtype(1), p.dtype.as_numpy_dtype(0))
  u = tf.minimum(sums[:, :-1] / sums[:, -1:], below_one)
  cdf = tf.math.cumsum(p, axis=1)
  cdf = tf.math.divide_no_nan(cdf, cdf[:, -1:])  # the last is 1 exactly (0 for a zero row)
  below = tf.searchsorted(u, cdf, side="left")  # draws below c_j
  below = tf.concat([tf.zeros([rows, 1], below.dtype), below], axis=1)
  return below[:, 1:] > below[:, :-1]


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
  hits = drawn(tf.stop_gradient(p), r, seed)
  keep_prob = -tf.math.expm1(r * tf.math.log1p(-tf.minimum(p, 1.0 - 1e-7)))
  # Units not kept (and all-zero rows) divide by 1: the same values, and no inf * 0 = NaN in
  # the gradient of the branch that tf.where drops.
  keep_prob = tf.where(hits, keep_prob, tf.ones_like(keep_prob))
  scale = tf.where(hits, 1.0 / tf.maximum(keep_prob, 1e-30), 0.0)
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
