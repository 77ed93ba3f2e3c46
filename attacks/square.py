"""Square Attack in L-inf (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): gradient-free.

A random search that uses only the model's logits, so masked or obfuscated gradients do not
stop it: the attack of AutoAttack that catches what gradient attacks miss.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from attacks import common, losses

# The published schedule: the square's area fraction p is p_init halved after each of these
# iterations (on a 10,000-query scale).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i, queries, p_init=0.8, rescale_schedule=False):
  """The fraction p of the image a square covers at iteration i (0-based).

  p_init / 2^k, k the number of entries of _HALVINGS below i. With `rescale_schedule`, i is
  first mapped to the 10,000-query scale (i * 10000 / queries); AutoAttack's Square does not
  rescale (its 5000 queries end in the p_init / 128 stage).
  """
  if rescale_schedule:
    i = int(i / queries * 10000)
  return p_init / 2 ** sum(i > h for h in _HALVINGS)


def square_sides(queries, height, width, p_init=0.8, rescale_schedule=False):
  """Side s of the square of each iteration: round(sqrt(p * H * W)), within [1, min(H, W) - 1]."""
  top = max(min(height, width) - 1, 1)
  return np.array([min(max(int(round(math.sqrt(
      square_fraction(i, queries, p_init, rescale_schedule) * height * width))), 1), top)
                   for i in range(max(queries, 1))], np.int32)


def square(model_fn, x, y, eps, queries=5000, *, p_init=0.8, clip_min=0.0, clip_max=1.0,
           rescale_schedule=False, seed=None):
  """L-inf Square Attack: random square-shaped updates at the vertices of the eps-box.

  Starts from vertical stripes, x + eps * s with s in {-1, +1} drawn per column and channel
  (clipped to the box). Each iteration draws, for every example not yet misclassified, a
  square of side s_i (`square_sides`) at a uniformly random position and one sign per
  channel, sets the perturbation inside the square to eps * sign (flipping the signs when
  that would change nothing) and keeps the candidate only if it lowers the margin
  z_y - max_{j != y} z_j. Only the examples whose margin is still > 0 are evaluated, so the
  cost falls as examples are fooled; the loop ends early when none is left.

  Args:
    model_fn: callable x -> logits (deterministic: the search compares single calls).
    x: float images [B, H, W, C] with static H, W, C; y: integer labels [B].
    eps: L-inf radius. queries: iterations after the initial point (a Python int; 5000 in
      AutoAttack), so an example costs at most queries + 1 model calls.
    p_init: initial fraction of the image covered by the square (0.8 in AutoAttack).
    clip_min, clip_max: box of valid inputs (floats or None).
    rescale_schedule: map the iterations onto the 10,000-query schedule (see
      `square_fraction`); False as in AutoAttack.
    seed: optional int making the search reproducible.
  Returns:
    x_adv like x: per example the point of lowest margin found, within eps of x and the box.
  """
  x, y = common.check_inputs(x, y)
  common.check_nonnegative(eps=eps)
  queries = common.check_steps(queries, "queries", python_int=True)
  common.check_clip(clip_min, clip_max)
  if not isinstance(p_init, numbers.Real) or not 0.0 < p_init <= 1.0:
    raise ValueError(f"Expected 0 < p_init <= 1. Received: p_init={p_init!r}")
  if x.shape.rank != 4 or not x.shape[1:].is_fully_defined():
    raise ValueError(f"Expected images [B, H, W, C] with known H, W, C. Received: "
                     f"x.shape={x.shape}")
  _, height, width, channels = x.shape
  eps = tf.cast(eps, x.dtype)
  clip = lambda t: common.clip_box(t, clip_min, clip_max)  # noqa: E731
  sides = tf.constant(square_sides(queries, height, width, p_init, rescale_schedule))
  y = tf.cast(y, tf.int32)

  def uniform(shape, salt):
    if seed is None:
      return tf.random.uniform(shape, dtype=x.dtype)
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(salt, tf.int64)])
    return tf.random.stateless_uniform(shape, pair, dtype=x.dtype)

  def signs(shape, salt):
    return tf.where(uniform(shape, salt) < 0.5, -tf.ones([], x.dtype), tf.ones([], x.dtype))

  def margin_of(t, labels):
    return losses.margin(tf.cast(model_fn(t), tf.float32), labels)

  batch = tf.shape(x)[0]
  x_best = clip(x + eps * signs(tf.stack([batch, 1, width, channels]), 0))
  margin_best = margin_of(x_best, y)
  rows, cols = tf.range(height), tf.range(width)

  def body(i, x_best, margin_best):
    idx = tf.where(margin_best > 0.0)[:, 0]
    xa, xb, ya = tf.gather(x, idx), tf.gather(x_best, idx), tf.gather(y, idx)
    n = tf.shape(idx)[0]
    s = sides[i]
    salt = 3 * (i + 1)
    top = tf.cast(uniform([n], salt) * tf.cast(height - s, x.dtype), tf.int32)
    left = tf.cast(uniform([n], salt + 1) * tf.cast(width - s, x.dtype), tf.int32)
    in_rows = tf.logical_and(rows[None] >= top[:, None], rows[None] < (top + s)[:, None])
    in_cols = tf.logical_and(cols[None] >= left[:, None], cols[None] < (left + s)[:, None])
    window = tf.logical_and(in_rows[:, :, None, None], in_cols[:, None, :, None])
    sign = signs(tf.stack([n, 1, 1, channels]), salt + 2)
    same = tf.abs(clip(xa + eps * sign) - xb) < 1e-7
    unchanged = tf.reduce_all(tf.logical_or(same, tf.logical_not(window)), axis=[1, 2, 3])
    sign = tf.where(unchanged[:, None, None, None], -sign, sign)
    x_new = tf.where(window, clip(xa + eps * sign), xb)
    m_new = margin_of(x_new, ya)
    m_old = tf.gather(margin_best, idx)
    better = m_new < m_old
    at = idx[:, None]
    x_best = tf.tensor_scatter_nd_update(
        x_best, at, tf.where(better[:, None, None, None], x_new, xb))
    margin_best = tf.tensor_scatter_nd_update(margin_best, at, tf.where(better, m_new, m_old))
    return i + 1, x_best, margin_best

  _, x_best, _ = tf.while_loop(
      lambda i, _, m: tf.logical_and(i < queries, tf.reduce_any(m > 0.0)), body,
      (tf.constant(0), x_best, margin_best))
  return tf.stop_gradient(x_best)
