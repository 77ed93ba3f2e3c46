"""Projected gradient descent (Madry et al. 2018) in L-inf and L2, and FGSM."""

import tensorflow as tf

from attacks import losses
from attacks.common import check_eot, check_nonnegative, linf_box, loss_and_gradient


def pgd(model_fn, x, y, eps, step_size, steps, *, rand_init=True, clip_min=0.0,
        clip_max=1.0, loss="ce", eot_samples=1, seed=None):
  """L-inf PGD: `steps` signed-gradient ascent steps, projected on the eps-ball and the box.

  Args:
    model_fn: x -> logits, in inference mode (may be stochastic: use eot_samples > 1).
    x: float inputs [B, ...]; y: integer labels [B].
    eps, step_size: L-inf radius and step, in the units of x.
    steps: number of iterations (0 returns the starting point).
    rand_init: start from a uniform random point of the ball (then clipped to the box).
    loss: 'ce' (cross-entropy) or 'cw' (Carlini-Wagner margin).
  Returns:
    x_adv, same shape as x, inside the eps-ball and [clip_min, clip_max].
  Plain TF ops (a tf.while_loop): works eagerly and inside tf.function.
  """
  check_nonnegative(eps=eps, step_size=step_size, steps=steps)
  check_eot(eot_samples)
  loss_fn = losses.get(loss)
  x = tf.convert_to_tensor(x)
  lo, hi = linf_box(x, eps, clip_min, clip_max)
  x_adv = x
  if rand_init:
    x_adv = x + tf.random.uniform(tf.shape(x), -eps, eps, dtype=x.dtype, seed=seed)
  x_adv = tf.clip_by_value(x_adv, lo, hi)

  def body(i, x_adv):
    _, grad = loss_and_gradient(model_fn, x_adv, y, loss_fn, eot_samples)
    return i + 1, tf.clip_by_value(x_adv + step_size * tf.sign(grad), lo, hi)

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)


def fgsm(model_fn, x, y, eps, *, clip_min=0.0, clip_max=1.0, eot_samples=1):
  """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps."""
  return pgd(model_fn, x, y, eps, eps, 1, rand_init=False, clip_min=clip_min,
             clip_max=clip_max, eot_samples=eot_samples)


def _l2_norm(v):
  return tf.sqrt(tf.reduce_sum(tf.square(v), axis=tf.range(1, tf.rank(v)), keepdims=True))


def l2_pgd(model_fn, x, y, eps, step_size, steps, *, rand_init=True, clip_min=0.0,
           clip_max=1.0, eot_samples=1, seed=None):
  """L2 PGD: normalised-gradient steps, projection on the L2 ball of radius eps and the box."""
  check_nonnegative(eps=eps, step_size=step_size, steps=steps)
  check_eot(eot_samples)
  x = tf.convert_to_tensor(x)

  def project(x_adv):
    delta = x_adv - x
    delta *= tf.minimum(1.0, eps / (_l2_norm(delta) + 1e-12))
    return tf.clip_by_value(x + delta, clip_min, clip_max)

  x_adv = x
  if rand_init:
    direction = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
    radius = eps * tf.random.uniform(tf.concat([tf.shape(x)[:1], tf.ones_like(tf.shape(x)[1:])], 0),
                                     dtype=x.dtype, seed=seed)
    x_adv = x + direction / (_l2_norm(direction) + 1e-12) * radius
  x_adv = project(x_adv)

  def body(i, x_adv):
    _, grad = loss_and_gradient(model_fn, x_adv, y, losses.cross_entropy, eot_samples)
    return i + 1, project(x_adv + step_size * grad / (_l2_norm(grad) + 1e-12))

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)
