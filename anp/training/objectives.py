"""What an adversarial method crafts and minimises: one small object per objective.

`AdversarialTrainer` asks its objective for the training examples (`craft`), the validation
attack (`attack`, PGD on the cross-entropy) and the data term of the weights' loss
(`data_loss`); everything else (masks, KL, weight decay, the vulnerability term, optimizers) is
the trainer's.

  MixedCE  at, anp, anp_vs: PGD on the cross-entropy, (CE(x) + w CE(x_adv)) / (1 + w)
           (Madry et al. 2018 with the ANP-VS code's mixing weight w = --adv_weight).
  Trades   trades: PGD on KL(f(x) || f(x_adv)) from a small Gaussian start, then
           CE(x) + beta KL(f(x) || f(x_adv)) (Zhang et al. 2019, beta = --trades_beta).
  AdvCE    admm (default), hydra --hydra_objective=adv: PGD on the cross-entropy, then
           CE(x_adv) alone (Ye et al. 2019's ADMM and retraining loss, their adv_main.py).
  SampledCE  at_bnn: PGD on a Bayesian network with a new weight sample per step, then
           CE(x_adv) alone on another sample (Liu et al. 2019, Adv-BNN; the trainer adds
           alpha KL / N with alpha = --beta).
"""

import tensorflow as tf

from attacks import sampled_pgd
from attacks import pgd, trades_pgd
from attacks.trades import kl_divergence


class Objective:
  """Defaults: no extra metrics; validation by PGD on the cross-entropy."""

  extra_metrics = ()

  def attack(self, model_fn, x, y, seed, attack_args):
    return pgd(model_fn, x, y, seed=seed, **attack_args)


class MixedCE(Objective):
  """The original code's adversarial objective."""

  def __init__(self, adv_weight=2.0):
    self.adv_weight = float(adv_weight)

  def craft(self, model_fn, x, y, seed, attack_args):
    return pgd(model_fn, x, y, seed=seed, **attack_args)

  def data_loss(self, y, logits, logits_adv, ce_clean, ce_adv):
    del y, logits, logits_adv
    return (ce_clean + self.adv_weight * ce_adv) / (1.0 + self.adv_weight), {}


class Trades(Objective):
  """TRADES: the examples maximise the KL to the clean prediction, the loss trades it off
  against the clean cross-entropy with weight `beta` (6 in the paper's CIFAR runs)."""

  extra_metrics = ("trades_kl",)

  def __init__(self, beta=6.0):
    self.beta = float(beta)

  def craft(self, model_fn, x, y, seed, attack_args):
    del y
    args = {k: v for k, v in attack_args.items() if k != "steps"}
    return trades_pgd(model_fn, x, steps=attack_args["steps"], seed=seed, **args)

  def data_loss(self, y, logits, logits_adv, ce_clean, ce_adv):
    del y, ce_adv
    kl = tf.reduce_mean(kl_divergence(logits, logits_adv))
    return ce_clean + self.beta * kl, {"trades_kl": kl}


class AdvCE(Objective):
  """CE(x_adv) alone on PGD-CE examples, without the clean cross-entropy."""

  def craft(self, model_fn, x, y, seed, attack_args):
    return pgd(model_fn, x, y, seed=seed, **attack_args)

  def data_loss(self, y, logits, logits_adv, ce_clean, ce_adv):
    del y, logits, logits_adv, ce_clean
    return ce_adv, {}


class SampledCE(AdvCE):
  """Adv-BNN: min over the posterior of E_w[CE(f_w(x_adv))] + alpha KL(q || p) / N.

  The examples come from `attacks.sampled_pgd` on the stochastic network (a weight sample per
  PGD step, as the authors' PGD on their always-sampling network), for training and
  validation alike; the data term is CE(x_adv) without the clean CE (their `elbo`).
  `model_fn` must take `seed` (`MaskedNet.attack_fn` of a Bayesian network does).
  """

  def attack(self, model_fn, x, y, seed, attack_args):
    return sampled_pgd(model_fn, x, y, seed=seed, **attack_args)

  craft = attack
