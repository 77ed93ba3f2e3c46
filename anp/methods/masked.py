"""Pruning units with beta-Bernoulli masks (Madaan, Shin & Hwang, ICML 2020): BP, ANP, ANP-VS.

Each unit of every conv and dense layer carries a dropout mask whose keep probability has a
beta-Bernoulli prior (`models.masks.BetaBernoulli`); the mask parameters train with their own
Adam at --init_lr on CE(x_adv) + beta KL / N (CE(x) for BP), the weights at 0.1 --init_lr
(`Method.make_trainer`), and units whose E[pi] falls below --thres are pruned.

  bp      Bayesian pruning (Lee et al. 2018): clean data only; beta 1 (the original's KL / N).
  anp     adversarial neural pruning: the weights train on the mixed clean and adversarial CE.
  anp_vs  ANP with vulnerability suppression: + lambda_vs V(x, x_adv) (Madaan et al., Eq. 3).
"""

from anp.methods.base import Method


class BayesianPruning(Method):
  name, title = "bp", "BP"
  keras_api = True
  adversarial = False
  masked = True

  def resolve(self, cfg):
    if cfg.beta is None:
      cfg.beta = 1.0  # the original's Bayesian pruning uses KL / N without --beta_weight


class AdversarialPruning(Method):
  name, title = "anp", "ANP"
  keras_api = True
  masked = True


class AdversarialPruningVS(Method):
  name, title = "anp_vs", "ANP-VS"
  keras_api = True
  masked = True
  vulnerability = True
