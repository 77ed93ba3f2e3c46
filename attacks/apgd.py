"""APGD (Croce & Hein, ICML 2020): L-inf PGD with momentum and a parameter-free step size."""

import tensorflow as tf

from attacks import losses
from attacks.common import check_eot, check_nonnegative, correct, linf_box, loss_and_gradient


def _bcast(mask, x):
  """Broadcasts a per-example [B] tensor against x [B, ...]."""
  return tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones_like(tf.shape(x)[1:])], 0))


def apgd(model_fn, x, y, eps, steps=100, *, loss="ce", rho=0.75, alpha=0.75, clip_min=0.0,
         clip_max=1.0, eot_samples=1, seed=None):
  """Auto-PGD in L-inf with the CE or DLR loss.

  Starts at a random point of the ball with step size 2 eps per example, takes momentum
  steps (alpha = 0.75), and at the checkpoints of the paper (first after 22% of the
  iterations, then windows shrinking by 3% down to 6%) halves the step size of an example
  and restarts it from its best point when fewer than rho of the window's steps raised the
  loss, or when its step size and best loss did not change since the last checkpoint.

  Returns, per example, the first point found that is misclassified, else the point of
  highest loss. Plain TF ops (a tf.while_loop): works eagerly and inside tf.function.
  """
  check_nonnegative(eps=eps, steps=steps)
  check_eot(eot_samples)
  if not 0 <= rho <= 1:
    raise ValueError(f"Expected 0 <= rho <= 1. Received: rho={rho}")
  loss_fn = losses.get(loss)
  x = tf.convert_to_tensor(x)
  lo, hi = linf_box(x, eps, clip_min, clip_max)
  batch = tf.shape(x)[0]
  first_window = max(int(0.22 * steps), 1)
  window_decrease = max(int(0.03 * steps), 1)
  min_window = max(int(0.06 * steps), 1)

  x0 = tf.clip_by_value(x + eps * tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype,
                                                    seed=seed), lo, hi)
  loss0, grad0 = loss_and_gradient(model_fn, x0, y, loss_fn, eot_samples)
  found0 = tf.logical_not(correct(model_fn, x0, y))
  eta0 = tf.fill([batch], tf.cast(2.0 * eps, x.dtype))

  state = dict(
      i=tf.constant(0), x=x0, x_prev=x0, grad=grad0, loss=loss0,
      x_best=x0, grad_best=grad0, loss_best=loss0,
      x_adv=x0, found=found0, eta=eta0,
      successes=tf.zeros([batch], tf.int32), since_check=tf.constant(0),
      window=tf.constant(first_window), loss_best_at_check=loss0,
      reduced_at_check=tf.ones([batch], tf.bool))

  def body(s):
    momentum = tf.where(s["i"] > 0, alpha, 1.0)
    eta = _bcast(s["eta"], x)
    z = tf.clip_by_value(s["x"] + eta * tf.sign(s["grad"]), lo, hi)
    x_new = tf.clip_by_value(
        s["x"] + momentum * (z - s["x"]) + (1.0 - momentum) * (s["x"] - s["x_prev"]), lo, hi)
    loss_new, grad_new = loss_and_gradient(model_fn, x_new, y, loss_fn, eot_samples)
    misclassified = tf.logical_not(correct(model_fn, x_new, y))
    newly = tf.logical_and(misclassified, tf.logical_not(s["found"]))
    x_adv = tf.where(_bcast(newly, x), x_new, s["x_adv"])
    found = tf.logical_or(s["found"], misclassified)
    improved = loss_new > s["loss_best"]
    x_best = tf.where(_bcast(improved, x), x_new, s["x_best"])
    grad_best = tf.where(_bcast(improved, x), grad_new, s["grad_best"])
    loss_best = tf.where(improved, loss_new, s["loss_best"])
    successes = s["successes"] + tf.cast(loss_new > s["loss"], tf.int32)
    since_check = s["since_check"] + 1
    at_check = tf.equal(since_check, s["window"])

    # Checkpoint: condition 1 (too few increases) or 2 (no reduction, no progress).
    few_increases = tf.cast(successes, x.dtype) <= rho * tf.cast(s["window"], x.dtype)
    stalled = tf.logical_and(tf.logical_not(s["reduced_at_check"]),
                             s["loss_best_at_check"] >= loss_best)
    halve = tf.logical_and(at_check, tf.logical_or(few_increases, stalled))
    restart = _bcast(halve, x)
    new = dict(
        i=s["i"] + 1,
        x=tf.where(restart, x_best, x_new),
        x_prev=s["x"],
        grad=tf.where(restart, grad_best, grad_new),
        loss=loss_new,
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        x_adv=x_adv, found=found,
        eta=tf.where(halve, s["eta"] / 2.0, s["eta"]),
        successes=tf.where(at_check, tf.zeros_like(successes), successes),
        since_check=tf.where(at_check, 0, since_check),
        window=tf.where(at_check, tf.maximum(s["window"] - window_decrease, min_window),
                        s["window"]),
        loss_best_at_check=tf.where(at_check, loss_best, s["loss_best_at_check"]),
        reduced_at_check=tf.where(at_check, halve, s["reduced_at_check"]))
    return (new,)

  (final,) = tf.while_loop(lambda s: s["i"] < steps, body, (state,))
  return tf.stop_gradient(tf.where(_bcast(final["found"], x), final["x_adv"], final["x_best"]))
