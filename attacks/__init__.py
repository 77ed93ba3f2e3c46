"""Adversarial attacks: each one a pure function of (model_fn, x, y, ...) -> x_adv.

`model_fn` is any callable x -> logits in inference mode (a Keras model or a function);
x is float [B, ...] (NHWC images), y integer labels [B].

Every attack is plain TF ops around one `tf.while_loop`, so it runs eagerly (a Python loop)
and, when called inside `tf.function` (a Keras `train_step`, an evaluation step, or
`compiled(...)`), as one graph loop with no per-step round trip to Python.

  pgd      L-inf PGD (Madry et al. 2018), CE / CW / DLR loss, random start, EOT.
  fgsm     one signed step of size eps.
  l2_pgd   L2 PGD with normalised gradient steps.
  apgd     Auto-PGD in L-inf (Croce & Hein 2020), CE / DLR loss.
  apgd_targeted  APGD-T: APGD on the targeted DLR loss towards the runner-up classes.
  fab_targeted  FAB-T: targeted L-inf Fast Adaptive Boundary attack (Croce & Hein 2020), the
           closest misclassified point by projections onto linearised decision boundaries.
  square   L-inf Square Attack (Andriushchenko et al. 2020): gradient-free random search.
  autoattack  the AutoAttack cascade (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square (or
           the rand version with EOT), each on the examples the earlier ones did not fool.
  sampled_pgd  PGD with a new weight sample of a stochastic network per step (Adv-BNN).
  trades_pgd  PGD on KL(f(x) || f(x_adv)), the inner maximisation of TRADES (Zhang et al. 2019).
  attack_with_restarts, compiled, correct, loss_gradient; losses in `attacks.losses`.
"""

from attacks.apgd import apgd, apgd_checkpoints
from attacks.autoattack import apgd_targeted, autoattack, autoattack_stages
from attacks.common import correct, loss_gradient, on_still_robust
from attacks.fab import fab_targeted
from attacks.losses import cross_entropy, cw_margin, dlr, dlr_targeted, margin
from attacks.pgd import fgsm, l2_pgd, pgd, sampled_pgd
from attacks.square import square
from attacks.trades import kl_divergence, trades_pgd
from attacks.wrappers import attack_with_restarts, compiled

__all__ = ["apgd", "apgd_checkpoints", "apgd_targeted", "attack_with_restarts", "autoattack",
           "autoattack_stages", "compiled", "correct", "cross_entropy", "cw_margin", "dlr",
           "dlr_targeted", "fab_targeted", "fgsm", "kl_divergence", "l2_pgd", "loss_gradient",
           "margin", "on_still_robust", "pgd", "sampled_pgd", "square", "trades_pgd"]
