"""Losses of ANP-VS: cross-entropy, weight decay, and the vulnerability of latent features."""

import tensorflow as tf


def _float32(t):
  """`t` in float32 (logits and features of a --mixed_precision network are 16-bit)."""
  return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def cross_entropy(y, logits):
  """Mean softmax cross-entropy with integer labels, in float32."""
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                     logits=_float32(logits)))


def accuracy(y, logits):
  return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                         tf.cast(y, tf.int32)), tf.float32))


def l2_penalty(variables):
  """sum_v ||v||^2 / 2 over `variables` (tf.nn.l2_loss, as the original)."""
  return tf.add_n([tf.nn.l2_loss(v) for v in variables]) if variables else 0.0


def layer_vulnerabilities(features_clean, features_adv):
  """Per-layer vulnerability: mean |f(x) - f(x_adv)| over batch and units, shape [L]."""
  return tf.stack([tf.reduce_mean(tf.abs(_float32(c) - _float32(a)))
                   for c, a in zip(features_clean, features_adv)])


def vulnerability(features_clean, features_adv):
  """V(x, x_adv) of Madaan et al. (2020), Eq. (2), averaged over the L latent layers.

  Every layer contributes to the gradient, as in the paper (the original code passes the
  first layer through `tf.assign`, which cuts its gradient).
  """
  return tf.reduce_mean(layer_vulnerabilities(features_clean, features_adv))
