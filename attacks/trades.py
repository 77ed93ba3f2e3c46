"""The inner maximisation of TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off
between Robustness and Accuracy"): L-inf PGD on KL(f(x) || f(x_adv)), from a small Gaussian
start, as in the authors' `trades_loss`."""

import tensorflow as tf

from attacks import common


def kl_divergence(p_logits, q_logits):
  """Per-example KL(softmax(p_logits) || softmax(q_logits)), [B]."""
  log_p = tf.nn.log_softmax(p_logits)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(q_logits)), axis=-1)


def trades_pgd(model_fn, x, eps, step_size, steps, *, clip_min=0.0, clip_max=1.0,
               start_std=0.001, seed=None):
  """x_adv maximising KL(f(x) || f(x_adv)) within the eps-ball and the box.

  Args:
    model_fn: x -> logits, in inference mode.
    x: float inputs [B, ...].
    eps, step_size, steps: L-inf radius, signed step size, iterations (>= 0).
    start_std: the start is x + start_std * N(0, 1) (0.001 in the authors' code), projected.
    seed: optional int making the start reproducible.
  Returns:
    x_adv like x (gradient stopped). f(x) is a constant target: only x_adv is differentiated.
  """
  x = tf.convert_to_tensor(x)
  steps = common.check_steps(steps)
  common.check_nonnegative(eps=eps, step_size=step_size, start_std=start_std)
  common.check_clip(clip_min, clip_max)
  eps = tf.cast(eps, x.dtype)
  target = tf.stop_gradient(model_fn(x))
  project = common.linf_projector(x, eps, clip_min, clip_max)
  labels = tf.zeros(tf.shape(x)[:1], tf.int32)  # unused by the KL loss
  loss = lambda logits, _: kl_divergence(target, logits)  # noqa: E731

  def body(i, x_adv):
    _, grad = common.loss_gradient(model_fn, x_adv, labels, loss)
    return i + 1, project(x_adv + step_size * tf.sign(grad))

  x_adv = project(x + start_std * common.random_normal(tf.shape(x), x.dtype, seed))
  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)
