"""APGD (Croce & Hein, ICML 2020): L-inf PGD with momentum and a parameter-free step size."""

import numbers

import numpy as np
import tensorflow as tf

from attacks import common


def apgd_checkpoints(steps):
  """Iteration counts after which APGD checks its step size, for `steps` iterations.

  The paper's w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22 and
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), computed in whole iterations as in the
  authors' code: first window int(0.22 N), then windows shrinking by int(0.03 N) down to
  int(0.06 N) (each at least 1). E.g. N = 100: [22, 41, 57, 70, 80, 87, 93, 99].
  """
  window = max(int(0.22 * steps), 1)
  decrease = max(int(0.03 * steps), 1)
  smallest = max(int(0.06 * steps), 1)
  points = []
  last = 0
  while last + window <= steps:
    last += window
    points.append(last)
    window = max(window - decrease, smallest)
  return points


def apgd(model_fn, x, y, eps, steps=100, *, loss="ce", rho=0.75, alpha=0.75, clip_min=0.0,
         clip_max=1.0, eot_samples=1, seed=None):
  """Auto-PGD in L-inf (Croce & Hein 2020) with the CE, DLR (or CW) loss.

  Starts at x + eps * uniform(-1, 1) (clipped to the box) with step size eta = 2 eps per
  example. Each iteration takes z = P(x_k + eta sign(grad)), then the momentum step
  x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})) with a = 1 at the first step and
  `alpha` after. At each checkpoint (`apgd_checkpoints`) the step size of an example is
  halved, and the example restarted from its best (highest-loss) point, when
    1. fewer than rho * window of the window's steps increased the loss, or
    2. its step size was not halved at the previous checkpoint and its best loss did not
       increase since then.

  Args:
    model_fn: callable x -> logits, in inference mode (random: use eot_samples > 1).
    x: float inputs [B, ...]; y: integer labels [B].
    eps: L-inf radius. steps: iterations (a Python int; 0 returns the random start).
    loss: 'ce', 'dlr' (needs >= 3 classes), 'cw', or a callable (logits, y) -> [B].
    rho: fraction of increasing steps below which the step size is halved.
    alpha: momentum weight (0.75 in the paper).
    clip_min, clip_max: box of valid inputs (floats, tensors, or None).
    eot_samples: model calls whose losses, gradients and logits are averaged per step.
    seed: optional int making the random start reproducible.
  Returns:
    x_adv like x: per example the last misclassified iterate if any was misclassified (by
    the EOT-averaged logits), else the iterate of highest loss. Plain TF ops (one
    tf.while_loop): works eagerly and inside tf.function.
  """
  x, y, steps, eot_samples, loss_fn = common.check_attack_args(
      x, y, steps, eot_samples, clip_min, clip_max, loss, python_int=True, eps=eps)
  for name, value in (("rho", rho), ("alpha", alpha)):
    if not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
      raise ValueError(f"Expected 0 <= {name} <= 1. Received: {name}={value!r}")
  dtype = x.dtype
  eps = tf.cast(eps, dtype)
  project = common.linf_projector(x, eps, clip_min, clip_max)
  batch = tf.shape(x)[0]

  # Per-iteration schedule: is iteration i (0-based) the last of a window, and its length.
  is_check = np.zeros(max(steps, 1), bool)
  window = np.ones(max(steps, 1), np.float32)
  last = 0
  for point in apgd_checkpoints(steps):
    is_check[point - 1] = True
    window[point - 1] = point - last
    last = point
  is_check = tf.constant(is_check)
  min_increases = tf.constant(rho * window, tf.float32)

  def evaluate(t):
    values, grad, logits = common.loss_gradient_logits(model_fn, t, y, loss_fn, eot_samples)
    return values, grad, tf.logical_not(common.predictions_correct(logits, y))

  x0 = project(x + eps * common.random_uniform(tf.shape(x), -1.0, 1.0, dtype, seed))
  loss0, grad0, wrong0 = evaluate(x0)

  def where(mask, a, b):
    return tf.where(common.per_example(mask, a), a, b)

  def body(i, s):
    momentum = tf.where(i > 0, tf.constant(alpha, dtype), tf.constant(1.0, dtype))
    eta = common.per_example(s["eta"], x)
    x_k = s["x"]
    z = project(x_k + eta * tf.sign(s["grad"]))
    x_new = project(x_k + momentum * (z - x_k) + (1.0 - momentum) * (x_k - s["x_prev"]))
    loss_new, grad_new, wrong = evaluate(x_new)

    x_adv = where(wrong, x_new, s["x_adv"])
    fooled = tf.logical_or(s["fooled"], wrong)
    improved = loss_new > s["loss_best"]
    x_best = where(improved, x_new, s["x_best"])
    grad_best = where(improved, grad_new, s["grad_best"])
    loss_best = tf.where(improved, loss_new, s["loss_best"])
    increases = s["increases"] + tf.cast(loss_new > s["loss"], tf.float32)

    at_check = tf.gather(is_check, i)
    too_few = increases < tf.gather(min_increases, i)  # condition 1
    stalled = tf.logical_and(tf.logical_not(s["halved_at_check"]),  # condition 2
                             s["loss_best_at_check"] >= loss_best)
    halve = tf.logical_and(at_check, tf.logical_or(too_few, stalled))
    return i + 1, dict(
        x=where(halve, x_best, x_new),
        x_prev=x_k,
        grad=where(halve, grad_best, grad_new),
        loss=loss_new,
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        x_adv=x_adv, fooled=fooled,
        eta=tf.where(halve, s["eta"] / 2.0, s["eta"]),
        increases=tf.where(at_check, tf.zeros_like(increases), increases),
        loss_best_at_check=tf.where(at_check, loss_best, s["loss_best_at_check"]),
        halved_at_check=tf.where(at_check, halve, s["halved_at_check"]))

  state = dict(
      x=x0, x_prev=x0, grad=grad0, loss=loss0,
      x_best=x0, grad_best=grad0, loss_best=loss0,
      x_adv=x0, fooled=wrong0,
      eta=tf.fill([batch], 2.0 * eps),
      increases=tf.zeros([batch], tf.float32),
      loss_best_at_check=loss0,
      halved_at_check=tf.ones([batch], tf.bool))
  _, final = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), state))
  return tf.stop_gradient(where(final["fooled"], final["x_adv"], final["x_best"]))
