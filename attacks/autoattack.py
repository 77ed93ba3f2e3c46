"""AutoAttack (Croce & Hein, ICML 2020) in L-inf: a cascade of independent attacks.

Each attack runs only on the examples every earlier one failed on (`on_still_robust`), and an
example counts as robust only if all of them fail. Versions:

  standard  APGD-CE, APGD-T (targeted DLR on the 9 runner-up classes), FAB-T (targeted L-inf
            FAB towards the same 9 classes, `attacks.fab`), Square (5000 queries): the
            published standard version.
  rand      APGD-CE and APGD-DLR, each with expectation over transformation (20 samples):
            the published version for models whose inference is random.
"""

import tensorflow as tf

from attacks import common, losses
from attacks.apgd import apgd
from attacks.common import on_still_robust
from attacks.fab import fab_targeted
from attacks.square import square

VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "rand": ("apgd-ce", "apgd-dlr")}
RAND_EOT_SAMPLES = 20


def apgd_targeted(model_fn, x, y, eps, steps=100, *, targets=9, seed=None, **kwargs):
  """APGD-T: APGD on the targeted DLR loss (`losses.dlr_targeted`) towards each of the
  `targets` classes ranked 2nd, 3rd, ... by the logits at x, each target run only on the
  examples the earlier targets did not fool.

  kwargs go to `attacks.apgd` (clip_min, clip_max, rho, alpha, eot_samples). Returns x_adv:
  the first fooling target's point, else the first target's.
  """
  x, y = common.check_inputs(x, y)
  ranked = common.ranked_classes(model_fn(x), targets)
  x_adv, robust = x, tf.ones(tf.shape(y), tf.bool)
  for k in range(targets):
    def attack(m, xs, ys, target, k=k):
      return apgd(m, xs, ys, eps, steps,
                  loss=lambda logits, labels: losses.dlr_targeted(logits, labels, target),
                  seed=None if seed is None else seed + k, **kwargs)

    x_adv, robust = on_still_robust(attack, model_fn, x, y, x_adv, robust,
                                    extras=(ranked[:, k + 1],), replace_all=k == 0)
  return tf.stop_gradient(x_adv)


def autoattack_stages(version="standard"):
  """The names of an AutoAttack version's attacks, in cascade order."""
  if version not in VERSIONS:
    raise ValueError(f"Expected version in {sorted(VERSIONS)}. Received: version={version!r}")
  return VERSIONS[version]


def eot_samples_of(version, eot_samples=None):
  """The EOT samples of an AutoAttack version's APGD attacks: for standard, `eot_samples` or 1;
  for rand, `eot_samples` where it is above 1, else the published RAND_EOT_SAMPLES."""
  autoattack_stages(version)  # checks the version
  if version == "rand":
    return eot_samples if eot_samples and eot_samples > 1 else RAND_EOT_SAMPLES
  return eot_samples or 1


def stages(version, eps, *, steps=100, targets=9, queries=5000, eot_samples=None,
           clip_min=0.0, clip_max=1.0, seed=None):
  """[(name, attack(model_fn, x, y) -> x_adv)] of an AutoAttack version, in cascade order.

  eot_samples: the EOT samples of the APGD attacks (`eot_samples_of`).
  """
  names = autoattack_stages(version)
  eot = eot_samples_of(version, eot_samples)
  box = dict(clip_min=clip_min, clip_max=clip_max)

  def seeded(k):
    return None if seed is None else seed + 100 * k

  made = {
      "apgd-ce": lambda m, x, y: apgd(m, x, y, eps, steps, loss="ce", eot_samples=eot,
                                      seed=seeded(0), **box),
      "apgd-dlr": lambda m, x, y: apgd(m, x, y, eps, steps, loss="dlr", eot_samples=eot,
                                       seed=seeded(1), **box),
      "apgd-t": lambda m, x, y: apgd_targeted(m, x, y, eps, steps, targets=targets,
                                              eot_samples=eot, seed=seeded(2), **box),
      "fab-t": lambda m, x, y: fab_targeted(m, x, y, eps, steps, n_targets=targets,
                                            seed=seeded(4), **box),
      "square": lambda m, x, y: square(m, x, y, eps, queries, seed=seeded(3), **box),
  }
  return [(name, made[name]) for name in names]


def autoattack(model_fn, x, y, eps, *, version="standard", steps=100, targets=9,
               queries=5000, eot_samples=None, clip_min=0.0, clip_max=1.0, seed=None,
               return_stages=False, judge_fn=None):
  """AutoAttack: the attacks of `stages(version, ...)` as a cascade on the still-robust examples.

  Examples misclassified at x are not attacked. Each stage runs on the examples every earlier
  stage failed on; an example is robust only if all fail, as decided by one prediction of
  `judge_fn` (default model_fn) right after each stage. With a random model that decision is
  final, as in the reference: a later prediction at the same point may differ.

  Args:
    model_fn: callable x -> logits (random: use version='rand'), the attacks' model.
    judge_fn: the model whose predictions decide robustness, where model_fn is a stand-in
      for gradients and queries (a compact copy, one weight sample of an ensemble).
    x: float images [B, H, W, C]; y: integer labels [B]; eps: L-inf radius.
    version: 'standard' or 'rand' (VERSIONS). steps: APGD and FAB-T iterations (100 in
      AutoAttack). targets: APGD-T's and FAB-T's target classes (9). queries: Square's
      queries (5000).
    eot_samples, clip_min, clip_max, seed: as in `stages`.
    return_stages: also return bool [stages, B], robust after each stage.
  Returns:
    x_adv (and the stage history): a fooling point where one stage fooled model_fn, else the
    first stage's point (x for examples misclassified at x).
  """
  x, y = common.check_inputs(x, y)
  robust = common.correct(judge_fn or model_fn, x, y)
  x_adv, history = x, []
  for k, (_, attack) in enumerate(stages(version, eps, steps=steps, targets=targets,
                                         queries=queries, eot_samples=eot_samples,
                                         clip_min=clip_min, clip_max=clip_max, seed=seed)):
    x_adv, robust = on_still_robust(attack, model_fn, x, y, x_adv, robust, replace_all=k == 0,
                                    judge_fn=judge_fn)
    history.append(robust)
  x_adv = tf.stop_gradient(x_adv)
  return (x_adv, tf.stack(history)) if return_stages else x_adv
