"""Helpers shared by the attacks: argument checks, EOT gradients, projection."""

import numbers

import tensorflow as tf


def check_nonnegative(**values):
  for name, value in values.items():
    if isinstance(value, numbers.Number) and value < 0:
      raise ValueError(f"Expected {name} >= 0. Received: {name}={value}")


def check_eot(eot_samples):
  if not isinstance(eot_samples, int) or eot_samples < 1:
    raise ValueError(f"Expected an integer eot_samples >= 1. Received: eot_samples={eot_samples}")


def loss_and_gradient(model_fn, x, y, loss_fn, eot_samples=1):
  """Per-example loss [B] and its input gradient, averaged over `eot_samples` model calls.

  Averaging the gradient over calls of a stochastic model is Expectation over
  Transformation (Athalye et al. 2018); for a deterministic model one call suffices.
  """
  def sample():
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = loss_fn(model_fn(x), y)
      total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, x)

  loss, grad = sample()
  for _ in range(eot_samples - 1):
    more_loss, more_grad = sample()
    loss, grad = loss + more_loss, grad + more_grad
  scale = 1.0 / eot_samples
  return loss * scale, grad * scale


def linf_box(x, eps, clip_min, clip_max):
  """Lower and upper bounds of the L-inf ball around x intersected with [clip_min, clip_max]."""
  return (tf.maximum(x - eps, tf.cast(clip_min, x.dtype)),
          tf.minimum(x + eps, tf.cast(clip_max, x.dtype)))


def correct(model_fn, x, y):
  """Boolean [B]: the model's prediction equals the label."""
  return tf.equal(tf.argmax(model_fn(x), -1, output_type=tf.int32), tf.cast(y, tf.int32))
