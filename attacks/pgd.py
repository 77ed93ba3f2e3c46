"""Projected gradient descent (Madry et al. 2018) in L-inf and L2, FGSM, and PGD on a
stochastic network with one weight sample per step (`sampled_pgd`, Adv-BNN's attack).

Plain TF ops around one `tf.while_loop`: each function runs eagerly, and as one graph loop
when called inside `tf.function` (see `attacks.compiled`).
"""

import tensorflow as tf

from attacks import common


def pgd(model_fn, x, y, eps, step_size, steps, *, rand_init=True, clip_min=0.0, clip_max=1.0,
        loss="ce", eot_samples=1, seed=None):
  """L-inf PGD: `steps` signed-gradient ascent steps, projected on the eps-ball and the box.

  Args:
    model_fn: callable x -> logits, in inference mode. May be random: use eot_samples > 1.
    x: float inputs [B, ...] (e.g. NHWC); y: integer labels [B].
    eps: L-inf radius (float or scalar tensor), in the units of x.
    step_size: size of each signed step.
    steps: number of iterations (Python int or integer tensor); 0 returns the start point.
    rand_init: start from x + uniform(-eps, eps) (then clipped to the box), else from x.
    clip_min, clip_max: box of valid inputs (floats, tensors broadcastable to x, or None).
    loss: 'ce' (cross-entropy), 'cw' (Carlini-Wagner margin max_{j!=y} z_j - z_y), 'dlr',
      or a callable (logits, y) -> per-example loss [B]; the loss is maximised.
    eot_samples: model calls whose gradients are averaged at each step.
    seed: optional int (or int scalar tensor) making the random start reproducible.
  Returns:
    x_adv like x: the last iterate, within eps of x and within [clip_min, clip_max].
  """
  x, y, steps, eot_samples, loss_fn = common.check_attack_args(
      x, y, steps, eot_samples, clip_min, clip_max, loss, eps=eps, step_size=step_size)
  eps = tf.cast(eps, x.dtype)
  step_size = tf.cast(step_size, x.dtype)
  project = common.linf_projector(x, eps, clip_min, clip_max)

  x_adv = x
  if rand_init:
    x_adv = x + common.random_uniform(tf.shape(x), -eps, eps, x.dtype, seed)
  x_adv = project(x_adv)

  def body(i, x_adv):
    _, grad = common.loss_gradient(model_fn, x_adv, y, loss_fn, eot_samples)
    return i + 1, project(x_adv + step_size * tf.sign(grad))

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)


def fgsm(model_fn, x, y, eps, *, clip_min=0.0, clip_max=1.0, eot_samples=1):
  """Fast gradient sign method (Goodfellow et al. 2015): x + eps * sign(grad CE), clipped."""
  return pgd(model_fn, x, y, eps, eps, 1, rand_init=False, clip_min=clip_min,
             clip_max=clip_max, loss="ce", eot_samples=eot_samples)


def l2_pgd(model_fn, x, y, eps, step_size, steps, *, rand_init=True, clip_min=0.0,
           clip_max=1.0, loss="ce", eot_samples=1, seed=None):
  """L2 PGD: steps along the per-example normalised gradient, projected on the L2 ball.

  The random start is uniform in the L2 ball of radius eps (then clipped to the box). Each
  step is x += step_size * g / ||g||_2, then delta is rescaled to norm <= eps per example and
  x clipped to [clip_min, clip_max] (clipping only shrinks delta when x is inside the box).
  Other arguments as in `pgd`.
  """
  x, y, steps, eot_samples, loss_fn = common.check_attack_args(
      x, y, steps, eot_samples, clip_min, clip_max, loss, eps=eps, step_size=step_size)
  eps = tf.cast(eps, x.dtype)
  step_size = tf.cast(step_size, x.dtype)
  tiny = tf.constant(1e-12, x.dtype)

  def project(x_adv):
    delta = x_adv - x
    scale = tf.minimum(tf.ones([], x.dtype), eps / (common.l2_norm(delta) + tiny))
    return common.clip_box(x + delta * common.per_example(scale, x), clip_min, clip_max)

  x_adv = x
  if rand_init:
    direction = common.random_normal(tf.shape(x), x.dtype, seed, salt=0)
    dim = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    u = common.random_uniform(tf.shape(x)[:1], 0.0, 1.0, x.dtype, seed, salt=1)
    radius = eps * tf.pow(u, 1.0 / dim)  # uniform in the ball
    x_adv = x + direction * common.per_example(radius / (common.l2_norm(direction) + tiny), x)
  x_adv = project(x_adv)

  def body(i, x_adv):
    _, grad = common.loss_gradient(model_fn, x_adv, y, loss_fn, eot_samples)
    unit = grad / common.per_example(common.l2_norm(grad) + tiny, x)
    return i + 1, project(x_adv + step_size * unit)

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)


def sampled_pgd(model_fn, x, y, eps, step_size, steps, *, seed=None, clip_min=0.0,
                clip_max=1.0):
  """L-inf PGD on the cross-entropy of a stochastic network, one weight sample per step.

  Args:
    model_fn: `model_fn(x, seed=None) -> logits [B, n_classes]`, one weight sample per call,
      stateless from a shape-[2] `seed`.
    x: inputs [B, ...]; y: integer labels [B].
    eps, step_size, steps (a Python int), clip_min, clip_max: as `attacks.pgd`.
    seed: optional int (scalar tensor): the random start (as `attacks.pgd` with that seed) and
      step i's weight sample (seed (seed, i + 1)) become pure functions of it; without it,
      fresh samples.
  Returns:
    x_adv like x, within eps of x and within the box.
  """
  x, y, steps, _, loss_fn = common.check_attack_args(
      x, y, steps, 1, clip_min, clip_max, "ce", python_int=True, eps=eps, step_size=step_size)
  eps = tf.cast(eps, x.dtype)
  project = common.linf_projector(x, eps, clip_min, clip_max)
  x_adv = project(x + common.random_uniform(tf.shape(x), -eps, eps, x.dtype, seed))

  def body(i, x_adv):
    step_seed = None if seed is None else tf.stack(
        [tf.cast(seed, tf.int64), tf.cast(i, tf.int64) + 1])
    with tf.GradientTape() as tape:
      tape.watch(x_adv)
      loss = tf.reduce_sum(loss_fn(tf.cast(model_fn(x_adv, seed=step_seed), tf.float32), y))
    grad = tape.gradient(loss, x_adv)
    return i + 1, project(x_adv + tf.cast(step_size, x.dtype) * tf.sign(grad))

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)
