"""Restarts and compiled entry points around the attack functions."""

import numbers

import tensorflow as tf

from attacks import common


def attack_with_restarts(attack_fn, model_fn, x, y, restarts, **kwargs):
  """Runs `attack_fn` up to `restarts` times; keeps per example the first fooling result.

  Run r (0-based) replaces the current x_adv of the examples that model_fn still classifies
  correctly by its own result where that one is misclassified; examples never fooled keep
  the first run's result. A run is skipped (tf.cond) when every example is already fooled.
  When `seed` is in kwargs and not None, run r uses seed + r, so that seeded restarts differ.

  Args:
    attack_fn: an attack of this package, (model_fn, x, y, **kwargs) -> x_adv.
    restarts: a Python int >= 1.
  Returns:
    x_adv like x. Plain TF ops: works eagerly and inside tf.function.
  """
  if (not isinstance(restarts, numbers.Integral) or isinstance(restarts, bool)
      or restarts < 1):
    raise ValueError(f"Expected an integer restarts >= 1. Received: restarts={restarts!r}")
  x, y = common.check_inputs(x, y)
  seed = kwargs.pop("seed", None)

  def run(r):
    extra = {} if seed is None else {"seed": seed + r}
    return attack_fn(model_fn, x, y, **kwargs, **extra)

  x_adv = run(0)
  for r in range(1, int(restarts)):
    still_correct = common.correct(model_fn, x_adv, y)

    def restart(r=r, x_adv=x_adv, still_correct=still_correct):
      candidate = run(r)
      better = tf.logical_and(still_correct,
                              tf.logical_not(common.correct(model_fn, candidate, y)))
      return tf.where(common.per_example(better, x), candidate, x_adv)

    x_adv = tf.cond(tf.reduce_any(still_correct), restart, lambda x_adv=x_adv: x_adv)
  return x_adv


def compiled(attack_fn, model_fn, *, jit_compile=False, **kwargs):
  """A `tf.function` (x, y) -> x_adv running `attack_fn(model_fn, x, y, **kwargs)`.

  The whole attack loop then runs as one graph (XLA-compiled with jit_compile=True). Build
  a Keras model (call it once) before the first call: variables cannot be created inside.
  """
  @tf.function(jit_compile=jit_compile)
  def run(x, y):
    return attack_fn(model_fn, x, y, **kwargs)

  return run
