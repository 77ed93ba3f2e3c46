"""Training without pruning: standard training, adversarial training (AT) and TRADES.

  standard  CE(x) (the original's 'base' mode).
  at        PGD adversarial training (Madry et al., ICLR 2018) with the original code's
            objective (CE(x) + w CE(x_adv)) / (1 + w), w = --adv_weight, plus its
            vulnerability term lambda_vs V(x, x_adv) (--lambda_vs, 1e-4 by default as in the
            original's AT; 0 gives Madry et al.'s). From another run's weights (--init_from)
            it is the paper's 'Pretrained AT'.
  trades    TRADES (Zhang et al., ICML 2019): CE(x) + beta KL(f(x) || f(x_adv)) on examples
            maximising the KL (`anp.training.objectives.Trades`, beta = --trades_beta).
"""

from anp.methods.base import Method


class Standard(Method):
  name, title = "standard", "Standard"
  keras_api = True
  adversarial = False


class AdversarialTraining(Method):
  name, title = "at", "AT"
  keras_api = True
  vulnerability = True

  def resolve(self, cfg):
    if cfg.lambda_vs is None:
      cfg.lambda_vs = 1e-4  # the original's AT ('base' mode, adv_train) keeps V at its default

  def row_name(self, result):
    return "Pretrained AT" if result.get("init_from") else self.title


class Trades(Method):
  name, title = "trades", "TRADES"
  keras_api = True

  def data_term(self, cfg):
    del cfg
    return "trades"
