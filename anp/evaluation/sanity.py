"""The gradient-masking checks of Carlini et al. (2019), "On Evaluating Adversarial Robustness",
run by `--sanity_checks` of --mode=eval on at most SANITY_MAX_EXAMPLES test examples:
`sanity_checks` verifies that PGD accuracy does not increase with eps or steps, that an
unbounded attack reaches about 0 accuracy, that PGD beats FGSM, uniform noise and the black-box
transfer attack, and that input gradients are non-zero (`input_gradients`); violations are
reported as possible gradient masking.
"""

import numpy as np
import tensorflow as tf

from anp.evaluation.attack_specs import EVAL_BATCH, make_attack
from attacks.common import predictions_correct
from attacks.losses import cw_margin

EOT_CHECK_SAMPLES = 10


def is_stochastic(net, x, tol=1e-6):
  """True when two inference calls on the same batch give different logits."""
  a = np.asarray(net(x, training=False))
  b = np.asarray(net(x, training=False))
  return bool(np.max(np.abs(a - b)) > tol)

SANITY_MAX_EXAMPLES = 1000


def _crafter(net, compact):
  """() -> the function x -> logits the attacks take gradients of: `net.attack_fn()` with
  `compact` where the net has one (as --mode=eval's attacks), else `net` in inference mode.
  Called inside each compiled step, where the attack function reads the variables."""
  if compact and hasattr(net, "attack_fn"):
    return net.attack_fn
  return lambda: lambda t, **kw: net(t, training=False, **kw)


def _accuracy_under(net, x, y, craft, spec, batch=EVAL_BATCH):
  """Accuracy of `net` on (x, y) under one attack spec ('noise' = uniform noise in the ball)
  crafted on `craft()` (`_crafter`)."""
  model_fn = lambda t: net(t, training=False)  # noqa: E731
  if spec.name == "noise":
    def attack(_, xb, yb):
      del yb
      noise = tf.random.uniform(tf.shape(xb), -spec.eps, spec.eps)
      return tf.clip_by_value(xb + noise, spec.clip_min, spec.clip_max)
  else:
    attack = make_attack(spec)

  @tf.function(reduce_retracing=True)
  def step(xb, yb):
    return predictions_correct(model_fn(tf.stop_gradient(attack(craft(), xb, yb))), yb)

  right = [step(x[i:i + batch], y[i:i + batch]).numpy() for i in range(0, len(x), batch)]
  return float(np.concatenate(right).mean())


def input_gradients(net, x, y, batch=EVAL_BATCH, craft=None):
  """Per example L1 norms of d loss / d x for the margin loss and for cross-entropy, of
  `craft()` (`_crafter`; by default `net` itself).

  The margin max_{j != y} z_j - z_y does not saturate (cross-entropy gradients of very
  confident examples can underflow to exactly 0 in float32), so it is the one checked.
  """
  craft = craft or _crafter(net, False)

  @tf.function(reduce_retracing=True)
  def grads(xb, yb):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(xb)
      logits = craft()(xb)
      margin = tf.reduce_sum(cw_margin(logits, yb))
      ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(yb, tf.int32), logits=logits))
    norm = lambda g: tf.zeros([tf.shape(xb)[0]]) if g is None else tf.reduce_sum(  # noqa: E731
        tf.reshape(tf.abs(g), [tf.shape(xb)[0], -1]), axis=1)
    return norm(tape.gradient(margin, xb)), norm(tape.gradient(ce, xb))

  out = [grads(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
  return (np.concatenate([m.numpy() for m, _ in out]),
          np.concatenate([c.numpy() for _, c in out]))


def gradient_free_check(per_attack, tol):
  """Check 9, gradient_free_not_stronger, from an evaluation's per-attack accuracies, or None.

  In AutoAttack's cascade Square runs only on the examples the gradient attacks (APGD-CE,
  APGD-T and FAB-T) did not fool, so `<autoattack>/fab-t - <autoattack>/square` is the
  fraction of examples that only the gradient-free attack finds (`<autoattack>/apgd-t` in
  evaluations made before the cascade had FAB-T). More than `tol` of them means the gradients
  mislead the gradient attacks (masked or obfuscated gradients, Athalye et al. 2018).
  """
  gradient = per_attack.get("autoattack/fab-t", per_attack.get("autoattack/apgd-t"))
  free = per_attack.get("autoattack/square")
  if gradient is None or free is None:
    return None
  return dict(gradient_attacks_acc=gradient, gradient_free_acc=free,
              found_only_by_gradient_free=gradient - free, attack="autoattack",
              passed=gradient - free <= tol)


def sanity_checks(net, x, y, spec, *, whitebox_acc=None, blackbox_acc=None, per_attack=None,
                  eps_factors=(0.25, 0.5, 1.0, 2.0), step_fractions=(0.25, 0.5, 1.0),
                  large_eps=None, large_eps_max_acc=0.02, min_grad_fraction=0.9, tol=None,
                  compact=False, verbose=True):
  """Carlini et al. (2019) checks of a PGD evaluation on (x, y) (float tensors).

  The attacks take their gradients where the evaluation's do: through `net.attack_fn()` with
  `compact` where `net` has one (the pruned units removed, or one weight sample of an
  Adv-BNN per call), else through `net`; `net` judges every one.

  1. eps_monotone: PGD accuracy does not increase with eps (eps x `eps_factors`, the step
     size scaled alike).
  2. steps_monotone: nor with the number of steps (`spec.steps` x `step_fractions`).
  3. large_eps: an unbounded attack (eps = the whole input box, default clip_max -
     clip_min; step 2.5 eps / steps) brings accuracy to about 0 (<= `large_eps_max_acc`).
  4. iterative_beats_single_step: PGD is not weaker than FGSM.
  5. iterative_beats_noise: PGD is not weaker than uniform noise in the same ball.
  6. whitebox_beats_blackbox: the white-box attack is not weaker than the transferred
     black-box one (when both accuracies are given).
  7. nonzero_gradients: the input gradient is non-zero on at least `min_grad_fraction` of
     the examples.
  8. eot_does_not_help (random models only, when the attack averages fewer than
     EOT_CHECK_SAMPLES gradients): PGD with EOT_CHECK_SAMPLES-sample expectation over
     transformation (Athalye et al. 2018) is not stronger than the evaluated attack; if it
     is, the randomness masked the gradients.
  9. gradient_free_not_stronger (when `per_attack`, the evaluation's per-attack accuracies,
     holds AutoAttack's stages): `gradient_free_check`, on the whole evaluation.
  "Not weaker" allows `tol` (default max(0.015, 3 / n)) for the randomness of the attacks.
  Returns dict(examples, tolerance, checks {name: {values..., passed}}, passed, failed,
  possible_gradient_masking).
  """
  level = tf.get_logger().level
  tf.get_logger().setLevel("ERROR")  # one traced attack per setting: retracing is expected
  try:
    return _sanity_checks(net, _crafter(net, compact), x, y, spec, whitebox_acc, blackbox_acc,
                          per_attack or {}, eps_factors, step_fractions, large_eps,
                          large_eps_max_acc, min_grad_fraction, tol, verbose)
  finally:
    tf.get_logger().setLevel(level)


def _sanity_checks(net, craft, x, y, spec, whitebox_acc, blackbox_acc, per_attack, eps_factors,
                   step_fractions, large_eps, large_eps_max_acc, min_grad_fraction, tol,
                   verbose):
  n = int(len(x))
  tol = max(0.015, 3.0 / n) if tol is None else tol
  pgd = spec.replace(name="pgd", restarts=1)
  checks = {}

  def log(msg):
    if verbose:
      print(f"  sanity: {msg}", flush=True)

  accs = [_accuracy_under(net, x, y, craft,
                          pgd.replace(eps=pgd.eps * f, step_size=pgd.step_size * f))
          for f in eps_factors]
  checks["eps_monotone"] = dict(
      eps=[pgd.eps * f for f in eps_factors], adv_acc=accs,
      passed=all(b <= a + tol for a, b in zip(accs, accs[1:])))
  log(f"PGD accuracy by eps {checks['eps_monotone']['eps']}: {accs}")

  steps = sorted({max(1, int(round(pgd.steps * f))) for f in step_fractions})
  accs = [_accuracy_under(net, x, y, craft, pgd.replace(steps=s)) for s in steps]
  checks["steps_monotone"] = dict(steps=steps, adv_acc=accs,
                                  passed=all(b <= a + tol for a, b in zip(accs, accs[1:])))
  log(f"PGD accuracy by steps {steps}: {accs}")

  big = (pgd.clip_max - pgd.clip_min) if large_eps is None else large_eps
  big_steps = max(pgd.steps, 10)
  acc = _accuracy_under(net, x, y, craft,
                        pgd.replace(eps=big, step_size=2.5 * big / big_steps, steps=big_steps))
  checks["large_eps"] = dict(eps=big, steps=big_steps, adv_acc=acc,
                             max_acc=large_eps_max_acc, passed=acc <= large_eps_max_acc)
  log(f"PGD accuracy at eps={big}: {acc}")

  pgd_acc = _accuracy_under(net, x, y, craft, pgd)
  fgsm_acc = _accuracy_under(net, x, y, craft, pgd.replace(name="fgsm"))
  noise_acc = _accuracy_under(net, x, y, craft, pgd.replace(name="noise"))
  checks["iterative_beats_single_step"] = dict(pgd_acc=pgd_acc, fgsm_acc=fgsm_acc,
                                               passed=pgd_acc <= fgsm_acc + tol)
  if pgd.steps * pgd.step_size < pgd.eps:
    checks["iterative_beats_single_step"]["note"] = (
        f"steps x step_size = {pgd.steps * pgd.step_size:g} < eps = {pgd.eps:g}: PGD cannot "
        "use its whole budget; raise --attack_steps or --step_size")
  checks["iterative_beats_noise"] = dict(pgd_acc=pgd_acc, noise_acc=noise_acc,
                                         passed=pgd_acc <= noise_acc + tol)
  log(f"accuracy under PGD {pgd_acc}, FGSM {fgsm_acc}, uniform noise {noise_acc}")

  if pgd.eot_samples < EOT_CHECK_SAMPLES and is_stochastic(net, x[:64]):
    eot_acc = _accuracy_under(net, x, y, craft, pgd.replace(eot_samples=EOT_CHECK_SAMPLES))
    checks["eot_does_not_help"] = dict(pgd_acc=pgd_acc, eot_samples=EOT_CHECK_SAMPLES,
                                       eot_acc=eot_acc, passed=eot_acc >= pgd_acc - tol)
    log(f"random model: PGD accuracy {pgd_acc} with {pgd.eot_samples} gradient sample(s), "
        f"{eot_acc} with {EOT_CHECK_SAMPLES}")

  if whitebox_acc is not None and blackbox_acc is not None:
    checks["whitebox_beats_blackbox"] = dict(whitebox_acc=whitebox_acc,
                                             blackbox_acc=blackbox_acc,
                                             passed=whitebox_acc <= blackbox_acc + tol)

  free = gradient_free_check(per_attack, tol)
  if free:
    checks["gradient_free_not_stronger"] = free
    log(f"examples only the gradient-free attack fools: {free['found_only_by_gradient_free']:.4f}")

  margin, ce = input_gradients(net, x, y, craft=craft)
  frac, frac_ce = float(np.mean(margin > 0)), float(np.mean(ce > 0))
  checks["nonzero_gradients"] = dict(fraction_nonzero=frac, fraction_nonzero_ce=frac_ce,
                                     min_fraction=min_grad_fraction,
                                     passed=frac >= min_grad_fraction)
  log(f"examples with a non-zero input gradient: {frac:.3f} (cross-entropy: {frac_ce:.3f})")

  failed = [k for k, v in checks.items() if not v["passed"]]
  return dict(examples=n, tolerance=tol, checks=checks, passed=not failed, failed=failed,
              possible_gradient_masking=bool(failed))
