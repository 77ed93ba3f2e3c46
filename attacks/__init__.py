"""Adversarial attacks: each one a pure function of (model_fn, x, y, ...) -> x_adv.

Every attack is plain TF ops around one `tf.while_loop`, so it runs eagerly, and as one
compiled loop when called inside `tf.function` (as the trainer and the evaluation do).
"""

import tensorflow as tf

from attacks.apgd import apgd
from attacks.common import correct, loss_and_gradient
from attacks.losses import cross_entropy, cw_margin, dlr
from attacks.pgd import fgsm, l2_pgd, pgd


def attack_with_restarts(attack_fn, model_fn, x, y, restarts, **kwargs):
  """Runs `attack_fn` `restarts` times; keeps per example the first misclassified result."""
  if not isinstance(restarts, int) or restarts < 1:
    raise ValueError(f"Expected an integer restarts >= 1. Received: restarts={restarts}")
  x_adv = attack_fn(model_fn, x, y, **kwargs)
  for _ in range(restarts - 1):
    still_correct = correct(model_fn, x_adv, y)
    candidate = attack_fn(model_fn, x, y, **kwargs)
    better = tf.logical_and(still_correct, tf.logical_not(correct(model_fn, candidate, y)))
    mask = tf.reshape(better, tf.concat([tf.shape(better), tf.ones_like(tf.shape(x)[1:])], 0))
    x_adv = tf.where(mask, candidate, x_adv)
  return x_adv


__all__ = ["apgd", "attack_with_restarts", "correct", "cross_entropy", "cw_margin", "dlr",
           "fgsm", "l2_pgd", "loss_and_gradient", "pgd"]
