"""Helpers shared by the attacks: argument checks, EOT gradients, projections, randomness,
and the cascade step (`on_still_robust`) of AutoAttack and the targeted attacks."""

import numbers

import numpy as np
import tensorflow as tf

from attacks import losses
from models import replica_rows


# ----------------------------------------------------------------------------------------------
# Argument checks (on Python values and on tensors whose value is known when tracing).


def _static(value):
  """The numpy value of a Python number or a tensor known at trace time, else None."""
  if value is None or isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, numbers.Number):
    return np.asarray(value)
  try:
    return tf.get_static_value(value)
  except (TypeError, ValueError):
    return None


def check_nonnegative(**values):
  for name, value in values.items():
    v = _static(value)
    if v is not None and np.any(v < 0):
      raise ValueError(f"Expected {name} >= 0. Received: {name}={value}")


def check_steps(steps, name="steps", python_int=False):
  """steps: a non-negative integer (a Python int, or when allowed an integer tensor)."""
  if isinstance(steps, numbers.Integral) and not isinstance(steps, (bool, np.bool_)):
    if steps < 0:
      raise ValueError(f"Expected {name} >= 0. Received: {name}={steps}")
    return int(steps)
  if not python_int and tf.is_tensor(steps) and steps.dtype.is_integer:
    v = _static(steps)
    if v is not None and np.any(v < 0):
      raise ValueError(f"Expected {name} >= 0. Received: {name}={v}")
    return tf.cast(steps, tf.int32)
  kind = "a Python int" if python_int else "an integer"
  raise ValueError(f"Expected {name} to be {kind} >= 0. Received: {name}={steps!r}")


def check_eot(eot_samples):
  if (not isinstance(eot_samples, numbers.Integral) or isinstance(eot_samples, bool)
      or eot_samples < 1):
    raise ValueError(f"Expected an integer eot_samples >= 1. Received: "
                     f"eot_samples={eot_samples!r}")
  return int(eot_samples)


def check_clip(clip_min, clip_max):
  lo, hi = _static(clip_min), _static(clip_max)
  if lo is not None and hi is not None and np.any(lo > hi):
    raise ValueError(f"Expected clip_min <= clip_max. Received: clip_min={clip_min}, "
                     f"clip_max={clip_max}")


def check_inputs(x, y):
  """x as a floating tensor [B, ...], y as an integer tensor [B]."""
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise ValueError(f"Expected a floating-point x. Received: x.dtype={x.dtype.name}")
  y = tf.convert_to_tensor(y)
  if not y.dtype.is_integer:
    raise ValueError(f"Expected integer labels y. Received: y.dtype={y.dtype.name}")
  if y.shape.rank is not None and y.shape.rank != 1:
    raise ValueError(f"Expected labels y of shape [batch]. Received: y.shape={y.shape}")
  return x, y


def check_attack_args(x, y, steps, eot_samples, clip_min, clip_max, loss, python_int=False,
                      **nonnegative):
  """The checks every iterative attack makes; returns (x, y, steps, eot_samples, loss_fn)."""
  x, y = check_inputs(x, y)
  check_nonnegative(**nonnegative)
  steps = check_steps(steps, python_int=python_int)
  eot_samples = check_eot(eot_samples)
  check_clip(clip_min, clip_max)
  return x, y, steps, eot_samples, losses.get(loss)


# ----------------------------------------------------------------------------------------------
# Gradients with expectation over transformation.


def loss_gradient_logits(model_fn, x, y, loss="ce", eot_samples=1):
  """(loss [B], d sum(loss) / dx, logits), each averaged over `eot_samples` model calls.

  The model calls run in a `tf.while_loop` (one call per iteration), so the graph does not
  grow with `eot_samples`.
  """
  loss_fn = losses.get(loss)
  eot_samples = check_eot(eot_samples)
  x = tf.convert_to_tensor(x)

  def sample():
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = tf.cast(model_fn(x), tf.float32)
      values = loss_fn(logits, y)
      total = tf.reduce_sum(values)
    grad = tape.gradient(total, x)
    if grad is None:
      raise ValueError("The loss of model_fn's output has no gradient with respect to x: "
                       "model_fn must be differentiable TF code.")
    return values, grad, logits

  first = sample()
  if eot_samples == 1:
    return first

  def body(i, total):
    return i + 1, tuple(a + b for a, b in zip(total, sample()))

  _, total = tf.while_loop(lambda i, _: i < eot_samples - 1, body, (tf.constant(0), first))
  scale = 1.0 / eot_samples
  return tuple(t * tf.cast(scale, t.dtype) for t in total)


def loss_gradient(model_fn, x, y, loss="ce", eot_samples=1):
  """Per-example loss [B] and its input gradient (of the summed loss), EOT-averaged.

  Args:
    model_fn: x -> logits (may be random: each of the `eot_samples` calls is a new sample).
    x: float inputs [B, ...]; y: integer labels [B].
    loss: 'ce', 'cw', 'dlr' or a callable (logits, y) -> [B].
    eot_samples: number of model calls whose losses and gradients are averaged
      (expectation over transformation, Athalye et al. 2018).
  Returns:
    (loss [B], gradient like x). Plain TF ops: works eagerly and inside tf.function.
  """
  values, grad, _ = loss_gradient_logits(model_fn, x, y, loss, eot_samples)
  return values, grad


# ----------------------------------------------------------------------------------------------
# Projections, per-example broadcasting, randomness.


def per_example(v, x):
  """Reshapes a [B] tensor to [B, 1, ..., 1] to broadcast against x [B, ...]."""
  return tf.reshape(v, tf.concat([tf.shape(v)[:1], tf.ones_like(tf.shape(x)[1:])], 0))


def clip_box(t, clip_min, clip_max):
  """Clips t to [clip_min, clip_max]; a None bound is not applied."""
  if clip_min is not None:
    t = tf.maximum(t, tf.cast(clip_min, t.dtype))
  if clip_max is not None:
    t = tf.minimum(t, tf.cast(clip_max, t.dtype))
  return t


def linf_projector(x, eps, clip_min, clip_max):
  """The function projecting onto {|t - x|_inf <= eps} intersected with the box.

  The box wins where the two do not meet (x outside [clip_min - eps, clip_max + eps]).
  """
  lo = clip_box(x - eps, clip_min, clip_max)
  hi = clip_box(x + eps, clip_min, clip_max)
  return lambda t: tf.minimum(tf.maximum(t, lo), hi)


def l2_norm(v):
  """Per-example L2 norm over all but the batch axis, [B]."""
  return tf.norm(tf.reshape(v, [tf.shape(v)[0], -1]), axis=1)


def random_uniform(shape, minval, maxval, dtype, seed, salt=0):
  """Uniform noise; stateless (reproducible) when `seed` is given, else a fresh sample."""
  if seed is None:
    return tf.random.uniform(shape, minval, maxval, dtype=dtype)
  pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(salt, tf.int64)])
  return replica_rows.per_example_draw(
      lambda s: tf.random.stateless_uniform(s, pair, minval, maxval, dtype=dtype), shape)


def random_normal(shape, dtype, seed, salt=0):
  if seed is None:
    return tf.random.normal(shape, dtype=dtype)
  pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(salt, tf.int64)])
  return replica_rows.per_example_draw(
      lambda s: tf.random.stateless_normal(s, pair, dtype=dtype), shape)


def predictions_correct(logits, y):
  return tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32))


def correct(model_fn, x, y):
  """Boolean [B]: model_fn's prediction on x equals the label (one model call)."""
  return predictions_correct(model_fn(x), y)


def ranked_classes(logits, targets):
  """Classes by decreasing logit, int32 [B, K]: column k (1 <= k <= targets) is the k-th
  runner-up, the target class of a targeted attack's k-th run. Checks 1 <= targets <= K - 1."""
  n_classes = logits.shape[-1]
  if n_classes is not None and not 1 <= targets <= n_classes - 1:
    raise ValueError(f"Expected 1 <= targets <= {n_classes - 1} (classes - 1). Received: "
                     f"targets={targets}")
  return tf.argsort(tf.cast(logits, tf.float32), axis=-1, direction="DESCENDING")


# ----------------------------------------------------------------------------------------------
# Cascades: an attack on the examples still classified correctly.


def on_still_robust(attack, model_fn, x, y, x_adv, robust, *, extras=(), replace_all=False,
                    judge_fn=None):
  """Runs `attack(model_fn, x_s, y_s, *extras_s)` on the rows s where `robust`.

  Rows the attack fools (by `judge_fn`, default model_fn) take its output and leave `robust`;
  with `replace_all` every attacked row takes it (a first stage: robust rows then carry an
  attacked point). `extras`: per-row tensors [B, ...] the attack needs, gathered like x and
  y. Returns (x_adv, robust); the attack is skipped (tf.cond) when no row is robust.
  """
  def run():
    idx = tf.where(robust)[:, 0]
    ys = tf.gather(y, idx)
    adv = attack(model_fn, tf.gather(x, idx), ys, *[tf.gather(e, idx) for e in extras])
    fooled = tf.logical_not(correct(judge_fn or model_fn, adv, ys))
    take = tf.ones_like(fooled) if replace_all else fooled
    at = idx[:, None]
    rows = tf.where(per_example(take, adv), adv, tf.gather(x_adv, idx))
    return (tf.tensor_scatter_nd_update(x_adv, at, rows),
            tf.tensor_scatter_nd_update(robust, at, tf.logical_not(fooled)))

  return tf.cond(tf.reduce_any(robust), run, lambda: (x_adv, robust))
