"""FAB-T in L-inf (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML 2020): the targeted Fast Adaptive Boundary attack of AutoAttack.

FAB looks for the adversarial point closest to x rather than for a high loss inside the
eps-ball: each iteration linearises the decision boundary between the true class y and a
target class t at the current point, projects onto that hyperplane (inside the box of valid
inputs) both from the current point and from x, and takes a step that mixes the two, biased
towards x. An example counts as fooled only if some iterate is misclassified within eps of x.
"""

import numbers

import tensorflow as tf

from attacks import common


def linf_step_to_hyperplane(t, w, c, lo, hi):
  """The smallest L-inf step d from t onto the hyperplane {z : c + w.(z - t) = 0} in a box.

  Solves min ||d||_inf subject to w.d = -c and lo <= t + d <= hi, per row. With the sign of
  the row flipped so that c >= 0, the step must lower w.z by c; coordinate i can move by at
  most r_i (t_i - lo_i if w_i > 0, hi_i - t_i if w_i < 0) against the sign of w_i, so a step of
  L-inf norm lambda lowers w.z by at most
    g(lambda) = sum_i |w_i| min(lambda, r_i),
  a concave, non-decreasing, piecewise linear function with breakpoints at the r_i. The
  optimum is d_i = -sign(w_i) min(lambda*, r_i) with lambda* the smallest root of
  g(lambda) = c, found by Newton's method from lambda_0 = 0:
    lambda_{k+1} = lambda_k + (c - g(lambda_k)) / g'(lambda_k),
    g'(lambda) = sum_{r_i > lambda} |w_i|  (the slope to the right of lambda).
  g being concave, each tangent lies above g, so the iterates rise monotonically to lambda*
  without passing it; an iterate on the same linear piece as lambda* is lambda* exactly, so
  the method is exact after at most (breakpoints below lambda*) + 1 steps (on MNIST models a
  handful: about 3 to 6). Each step is one elementwise pass over the row: cheaper than
  sorting the r_i. When g(inf) = sum_i |w_i| r_i < c no point of the box reaches the
  hyperplane; then d moves every coordinate to its bound (lambda* = inf), as close to it as
  the box allows (FAB's choice).

  Args:
    t, w: float [B, n], the points and the hyperplanes' normals; c: [B], the affine function
      c + w.(z - t) at z = t (its value at the point).
    lo, hi: the box, broadcastable to [B, n], lo <= t <= hi.
  Returns:
    d [B, n], zero where w is zero.
  """
  flip = tf.where(c >= 0, tf.ones_like(c), -tf.ones_like(c))
  w = w * flip[:, None]
  c = c * flip
  reach = tf.maximum(tf.where(w > 0, t - lo, hi - t), 0.0)  # r_i
  mass = tf.abs(w)
  feasible = tf.reduce_sum(mass * reach, axis=1) >= c
  zero = tf.zeros_like(mass)

  def body(i, lam, active):
    g = tf.reduce_sum(mass * tf.minimum(lam[:, None], reach), axis=1)
    slope = tf.reduce_sum(tf.where(reach > lam[:, None], mass, zero), axis=1)
    active = tf.logical_and(active, tf.logical_and(g < c, slope > 0.0))
    new = tf.where(active, lam + (c - g) / tf.where(active, slope, tf.ones_like(slope)), lam)
    return i + 1, new, tf.logical_and(active, new > lam)  # a step that rounds to 0: done

  limit = tf.shape(t)[1] + 1  # breakpoints + 1: never reached in practice
  _, lam, _ = tf.while_loop(lambda i, lam, active: tf.logical_and(i < limit,
                                                                   tf.reduce_any(active)),
                            body, (tf.constant(0), tf.zeros_like(c), feasible))
  lam = tf.where(feasible, lam, tf.constant(float("inf"), w.dtype))
  return -tf.sign(w) * tf.minimum(lam[:, None], reach)


def logit_gap(logits, y, target):
  """z_target - z_y, [B]: positive once the target class beats the true class."""
  return (tf.gather(logits, tf.cast(target, tf.int32), batch_dims=1)
          - tf.gather(logits, tf.cast(y, tf.int32), batch_dims=1))


def _linf(v):
  return tf.reduce_max(tf.abs(tf.reshape(v, [tf.shape(v)[0], -1])), axis=1)


def fab_single_run(model_fn, x, y, target, eps, steps=100, *, eta=1.05, beta=0.9,
                   alpha_max=0.1, clip_min=0.0, clip_max=1.0, random_start=False, seed=None):
  """One run of targeted L-inf FAB towards `target` [B]; x_adv [B, ...] or x where it fails.

  From x_0 = x (or, with `random_start`, x + eps/2 u / ||u||_inf, u uniform in [-1, 1],
  clipped to the box), iteration k with f = z_t - z_y and w = grad_x f at x_k (one forward
  and one backward pass) takes the linearised boundary pi_k = {z : f(x_k) + w.(z - x_k) = 0}
  and the box-constrained L-inf projections onto it (`linf_step_to_hyperplane`)
    d_1 from x_k,   d_2 from x,
  and steps to
    x_{k+1} = clip((1 - a)(x_k + eta d_1) + a (x + eta d_2)),
    a = min(||d_1|| / (||d_1|| + ||d_2||), alpha_max)  (norms at least 1e-8),
  overshooting the hyperplane by eta and biased towards x by a. A second forward pass
  checks x_{k+1}: if it is misclassified (any wrong class), it is kept when closer to x than
  the best so far and the iterate moves back towards x, x_{k+1} <- x + beta (x_{k+1} - x).
  The loop ends after `steps` iterations, or once every row has a misclassified point within
  eps (the rest of a run could only shorten a distance already <= eps).

  Returns the closest misclassified iterate where its distance ||x_adv - x||_inf is <= eps,
  else x. clip_min, clip_max: the box (finite floats or tensors broadcastable to x).
  """
  dtype = x.dtype
  eps = tf.cast(eps, dtype)
  batch = tf.shape(x)[0]
  lo = tf.reshape(tf.broadcast_to(tf.cast(clip_min, dtype), tf.shape(x)), [batch, -1])
  hi = tf.reshape(tf.broadcast_to(tf.cast(clip_max, dtype), tf.shape(x)), [batch, -1])
  clip = lambda t: common.clip_box(t, clip_min, clip_max)  # noqa: E731
  x0 = tf.reshape(x, [batch, -1])
  gap = lambda logits, labels: logit_gap(logits, labels, target)  # noqa: E731

  x_start = x
  if random_start:
    u = common.random_uniform(tf.shape(x), -1.0, 1.0, dtype, seed)
    x_start = clip(x + 0.5 * eps * u / common.per_example(tf.maximum(_linf(u), 1e-12), u))

  def body(i, x_k, x_best, dist_best):
    f, grad, _ = common.loss_gradient_logits(model_fn, x_k, y, gap)
    w = tf.reshape(grad, [batch, -1])
    xk = tf.reshape(x_k, [batch, -1])
    f = tf.cast(f, dtype)
    d1 = linf_step_to_hyperplane(xk, w, f, lo, hi)
    d2 = linf_step_to_hyperplane(x0, w, f + tf.reduce_sum(w * (x0 - xk), axis=1), lo, hi)
    n1 = tf.maximum(_linf(d1), 1e-8)
    n2 = tf.maximum(_linf(d2), 1e-8)
    a = tf.minimum(n1 / (n1 + n2), alpha_max)[:, None]
    x_new = clip(tf.reshape((1.0 - a) * (xk + eta * d1) + a * (x0 + eta * d2), tf.shape(x)))
    wrong = tf.logical_not(common.correct(model_fn, x_new, y))
    dist = _linf(x_new - x)
    better = tf.logical_and(wrong, dist < dist_best)
    x_best = tf.where(common.per_example(better, x), x_new, x_best)
    dist_best = tf.where(better, dist, dist_best)
    back = x + beta * (x_new - x)
    x_next = tf.where(common.per_example(wrong, x), back, x_new)
    return i + 1, x_next, x_best, dist_best

  def cond(i, x_k, x_best, dist_best):
    del x_k, x_best
    return tf.logical_and(i < steps, tf.reduce_any(dist_best > eps))

  dist0 = tf.fill([batch], tf.constant(float("inf"), dtype))
  _, _, x_best, dist_best = tf.while_loop(cond, body, (tf.constant(0), x_start, x, dist0))
  return tf.where(common.per_example(dist_best <= eps, x), x_best, x)


def fab_targeted(model_fn, x, y, eps, steps=100, *, n_targets=9, restarts=1, eta=1.05, beta=0.9,
                 alpha_max=0.1, clip_min=0.0, clip_max=1.0, seed=None):
  """FAB-T: targeted L-inf FAB (Croce & Hein 2020) as AutoAttack's standard version runs it.

  For k = 1 .. n_targets, the target of every example is its class ranked k + 1 by the logits
  at x (the runner-ups 2nd, 3rd, ...), and `fab_single_run` runs `restarts` times towards it
  (the first from x, the others from random points eps/2 away), each run only on the examples
  every earlier run failed on. Examples misclassified at x are not attacked. An example is
  fooled only by a misclassified point within eps of x and the box. Cost per run and
  iteration: one forward and backward pass (the gradient of z_t - z_y) and one forward pass.
  AutoAttack: n_targets 9, steps 100, restarts 1, eta 1.05, beta 0.9, alpha_max 0.1.

  Args:
    model_fn: callable x -> logits, deterministic, in inference mode.
    x: float inputs [B, ...]; y: integer labels [B].
    eps: L-inf radius. steps: iterations per run (a Python int or integer tensor).
    n_targets: target classes (1 .. classes - 1). restarts: runs per target (a Python int).
    eta: overshoot (>= 1). beta: backward step after a success (in (0, 1]).
    alpha_max: largest weight of the step from x (in [0, 1]).
    clip_min, clip_max: the finite box of valid inputs (floats or tensors).
    seed: optional int making the random starts (restarts > 1) reproducible.
  Returns:
    x_adv like x: a point misclassified within eps where one was found, else x. Plain TF ops
    (one tf.while_loop per run): works eagerly and inside tf.function.
  """
  x, y = common.check_inputs(x, y)
  common.check_nonnegative(eps=eps)
  steps = common.check_steps(steps)
  common.check_clip(clip_min, clip_max)
  if clip_min is None or clip_max is None:
    raise ValueError(f"FAB needs a finite box. Received: clip_min={clip_min}, "
                     f"clip_max={clip_max}")
  if (not isinstance(restarts, numbers.Integral) or isinstance(restarts, bool)
      or restarts < 1):
    raise ValueError(f"Expected an integer restarts >= 1. Received: restarts={restarts!r}")
  for name, value, ok in (("eta", eta, lambda v: v >= 1.0),
                          ("beta", beta, lambda v: 0.0 < v <= 1.0),
                          ("alpha_max", alpha_max, lambda v: 0.0 <= v <= 1.0)):
    if not isinstance(value, numbers.Real) or not ok(value):
      raise ValueError(f"Expected a valid {name} (eta >= 1, 0 < beta <= 1, "
                       f"0 <= alpha_max <= 1). Received: {name}={value!r}")
  logits = model_fn(x)
  ranked = common.ranked_classes(logits, n_targets)
  robust = common.predictions_correct(logits, y)
  x_adv = x
  for k in range(n_targets):
    for r in range(restarts):
      def attack(m, xs, ys, target, r=r, k=k):
        return fab_single_run(m, xs, ys, target, eps, steps, eta=eta, beta=beta,
                              alpha_max=alpha_max, clip_min=clip_min, clip_max=clip_max,
                              random_start=r > 0,
                              seed=None if seed is None else seed + restarts * k + r)

      x_adv, robust = common.on_still_robust(attack, model_fn, x, y, x_adv, robust,
                                             extras=(ranked[:, k + 1],))
  return tf.stop_gradient(x_adv)
