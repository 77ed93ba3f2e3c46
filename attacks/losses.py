"""Per-example attack losses on logits (each to be maximised by the attacker)."""

import tensorflow as tf


def cross_entropy(logits, y):
  """Softmax cross-entropy per example, [B]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                        logits=logits)


def _true_and_best_other(logits, y):
  n_classes = tf.shape(logits)[-1]
  onehot = tf.one_hot(tf.cast(y, tf.int32), n_classes, dtype=logits.dtype)
  true = tf.reduce_sum(logits * onehot, -1)
  other = tf.reduce_max(logits - 1e9 * onehot, -1)
  return true, other


def cw_margin(logits, y):
  """Carlini-Wagner margin max_{j != y} z_j - z_y, [B]; positive once misclassified."""
  true, other = _true_and_best_other(logits, y)
  return other - true


def dlr(logits, y):
  """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3).

  Invariant to shifts and rescaling of the logits; needs at least 3 classes.
  """
  if logits.shape[-1] is not None and logits.shape[-1] < 3:
    raise ValueError(f"The DLR loss needs at least 3 classes. Received: {logits.shape[-1]}")
  top = tf.math.top_k(logits, 3).values
  true, other = _true_and_best_other(logits, y)
  return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


def get(name):
  if name not in LOSSES:
    raise ValueError(f"Expected loss in {sorted(LOSSES)}. Received: loss={name!r}")
  return LOSSES[name]
