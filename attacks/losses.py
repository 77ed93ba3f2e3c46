"""Per-example attack losses on logits, each one maximised by the attacker.

Every loss takes `(logits [B, K], y [B] int)` and returns a float tensor [B].
"""

import tensorflow as tf


def cross_entropy(logits, y):
  """Softmax cross-entropy per example, [B]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                        logits=logits)


def _true_and_best_other(logits, y):
  """z_y and max_{j != y} z_j, both [B]."""
  is_true = tf.cast(tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1]), tf.bool)
  true = tf.reduce_sum(tf.where(is_true, logits, tf.zeros_like(logits)), -1)
  other = tf.reduce_max(tf.where(is_true, tf.fill(tf.shape(logits), logits.dtype.min), logits),
                        -1)
  return true, other


def cw_margin(logits, y):
  """Carlini-Wagner margin max_{j != y} z_j - z_y, [B]; positive once misclassified."""
  true, other = _true_and_best_other(logits, y)
  return other - true


def dlr(logits, y):
  """Difference of logits ratio (Croce & Hein 2020), [B].

  -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), where z_pi1 >= z_pi2 >= z_pi3 are the
  largest logits: invariant to shifting and rescaling the logits. Needs at least 3 classes.
  """
  n_classes = logits.shape[-1]
  if n_classes is not None and n_classes < 3:
    raise ValueError(f"The DLR loss needs at least 3 classes. Received logits with "
                     f"{n_classes} classes.")
  asserts = []
  if n_classes is None:
    asserts.append(tf.debugging.assert_greater_equal(
        tf.shape(logits)[-1], 3, message="The DLR loss needs at least 3 classes."))
  with tf.control_dependencies(asserts):
    top = tf.math.top_k(logits, 3).values
  true, other = _true_and_best_other(logits, y)
  return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits, y, target):
  """Targeted difference of logits ratio (Croce & Hein 2020), [B], maximised by the attacker.

  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) for target classes t [B]; positive once
  z_t exceeds z_y. Needs at least 4 classes.
  """
  n_classes = logits.shape[-1]
  if n_classes is not None and n_classes < 4:
    raise ValueError(f"The targeted DLR loss needs at least 4 classes. Received logits with "
                     f"{n_classes} classes.")
  top = tf.math.top_k(logits, 4).values
  true = tf.gather(logits, tf.cast(y, tf.int32), batch_dims=1)
  aim = tf.gather(logits, tf.cast(target, tf.int32), batch_dims=1)
  return -(true - aim) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def margin(logits, y):
  """z_y - max_{j != y} z_j, [B]: the score Square minimises; <= 0 once misclassified."""
  return -cw_margin(logits, y)


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


def get(loss):
  """The loss function of a name in LOSSES, or `loss` itself when it is callable."""
  if callable(loss):
    return loss
  if not isinstance(loss, str) or loss not in LOSSES:
    raise ValueError(f"Expected loss in {sorted(LOSSES)} or a callable (logits, y) -> [B]. "
                     f"Received: loss={loss!r}")
  return LOSSES[loss]
