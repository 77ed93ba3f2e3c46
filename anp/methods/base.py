"""`Method`: what every training method tells the rest of the project, with common defaults.

The training loop (`anp.training.train`), configuration (`anp.config`), run directories
(`anp.runs.rundir`), evaluation, export and the tables ask a method object through these
attributes and hooks and never compare its name. This module imports the training code inside
the hooks, so that the methods' light modules (`standard`, `masked`) load without it.
"""


class Method:
  """One training method (a `--method` value).

  Class attributes:
    name: the --method value; title: the model's name in tables.
    adversarial: trains on adversarial examples (the trainer crafts x_adv every step).
    masked: the network carries beta-Bernoulli masks on its units (`models.masks`).
    vulnerability: the weights' loss adds lambda_vs V(x, x_adv) (--lambda_vs).
    deterministic: inference is deterministic (False for Bayesian weights).
    run_keys: config fields besides `anp.config.RUN_KEYS` that make a run's identity.
    legacy: values of config fields that a run saved before the field existed used.
    adv_weight_decay: the --weight_decay default when the data term is CE(x_adv) alone.
    ticket: what a run hands to HYDRA's finetune stage as --init_from: None, 'scores' (learned
      per-weight or per-unit scores), 'weight_mask' (a per-weight top-k mask in the scores)
      or 'magnitude' (kernels driven to per-layer top-k sparsity; pruned by magnitude);
      ticket_label names such a run ('ADMM' in 'the ADMM run', and in the finetuned row's name).
    keras_api: trains any Keras model through `anp.api` (its network needs nothing but the
      optional beta-Bernoulli masks, its trainer is the common one).
  """

  name = None
  title = None
  adversarial = True
  masked = False
  vulnerability = False
  deterministic = True
  run_keys = ()
  legacy = {}
  adv_weight_decay = 1e-4
  ticket = None
  ticket_label = None
  keras_api = False

  def resolve(self, cfg):
    """Fills the method's own defaults into `cfg` (a Config copy; None fields only)."""

  def validate(self, cfg, need):
    """Checks the method's flags: `need(ok, flag, expected, value)` raises a UserError."""

  def data_term(self, cfg):
    """The weights' data term (`objective`): 'mixed' (the default), 'trades', 'adv' (CE(x_adv)
    alone) or 'sampled' (CE(x_adv) on a Bayesian network)."""
    del cfg
    return "mixed"

  def net_options(self, cfg):
    """Keyword arguments of the network (`models.base.MaskedNet`) besides its architecture."""
    return dict(masked=self.masked)

  def check_init_from(self, cfg, prefix):
    """Refuses a --init_from (checkpoint `prefix`, or None) this method cannot start from."""

  def make_trainer(self, net, cfg, n_train, total_steps, wrap, **kwargs):
    """The compiled trainer (`anp.training.model.AdversarialTrainer`) of a resolved config.

    `wrap` wraps each optimizer (a LossScaleOptimizer under mixed_float16); `kwargs` go to the
    trainer. Default: Adam on the weights at BASE_LR (unmasked methods) or, for masks, 0.1
    --init_lr on the weights and --init_lr on the mask parameters, with the original's
    staircase decay.
    """
    from anp.training.model import adam, staircase
    from anp.config import architecture
    from anp.runs.rundir import LR_DECAY_POINTS
    decay = LR_DECAY_POINTS[architecture(cfg.dataset)]
    mask_opt = None
    if net.masks:
      weight_opt = wrap(adam(staircase(0.1 * cfg.init_lr, total_steps, decay)))
      mask_opt = wrap(adam(staircase(cfg.init_lr, total_steps, decay)))
      mask_opt.build(net.mask_variables)
    else:
      weight_opt = wrap(adam(staircase(BASE_LR, total_steps, decay)))
    weight_opt.build(net.weight_variables)
    return self.compile_trainer(net, cfg, n_train, weight_opt, mask_opt, **kwargs)

  def compile_trainer(self, net, cfg, n_train, optimizer, mask_optimizer=None, **kwargs):
    """`AdversarialTrainer` with the config's attack, loss weights and this method's
    objective, compiled with `optimizer`; `kwargs` go to the trainer."""
    from anp.training.model import AdversarialTrainer
    if self.masked and not net.masks:
      raise ValueError(f"Method {self.name!r} needs a network built with masked=True.")
    trainer = AdversarialTrainer(net, n_train=n_train, mask_optimizer=mask_optimizer,
                                 **self.trainer_args(cfg), **kwargs)
    trainer.compile(optimizer=optimizer, jit_compile=cfg.jit_compile)
    return trainer

  def trainer_args(self, cfg):
    """The `AdversarialTrainer` arguments of a resolved config but the network, n_train and
    the optimizers (`anp.api.adversarial` builds its trainer from them too)."""
    return dict(adversarial=self.adversarial, eps=cfg.eps, step_size=cfg.step_size,
                attack_steps=cfg.train_attack_steps, adv_weight=cfg.adv_weight, beta=cfg.beta,
                lambda_vs=cfg.lambda_vs if self.vulnerability else 0.0,
                weight_decay=cfg.weight_decay, seed=cfg.seed, compact_attack=cfg.compact_attack,
                attack_dtype=cfg.train_attack_dtype,
                objective=objective(self.data_term(cfg), cfg))

  def start(self, trainer, cfg):
    """What a new run does once its starting weights are in place (--init_from loaded)."""

  def checkpoint_objects(self, trainer):
    """Trainer state saved with the run's checkpoints besides the network and optimizers."""
    del trainer
    return {}

  def end_of_epoch(self, trainer, cfg, epoch):
    """The train log's extra entries of `epoch` (1-based), after the epoch's last step."""
    del trainer, cfg, epoch
    return {}

  def check_export(self, mode):
    """Refuses an export --mode ('prune' or 'export') this method's runs cannot take."""

  def evaluation_defaults(self, cfg):
    """The evaluation flags this method's models need unless given (e.g. EOT samples)."""
    del cfg
    return {}

  def inference_net(self, net, cfg, kind):
    """(the network --mode=eval attacks, a dict describing the change or None) for a model
    of this method loaded as `kind` ('run', 'original_checkpoint' or 'saved_model')."""
    del cfg, kind
    return net, None

  def serving_net(self, net, cfg, serving_cfg):
    """The network --mode=export serves; may record what it did in `serving_cfg`."""
    del cfg, serving_cfg
    return net

  def size_columns(self, columns, info):
    """eval.json's size fields (`anp.evaluation.evaluate.size_columns`) of the network
    `inference_net` returned with `info`, where this method's models cost more than the
    deterministic network's units say."""
    del info
    return columns

  def row_settings(self, cfg):
    """What `row_name` needs from a run config beyond eval.json's fields (or None)."""
    del cfg

  def row_name(self, result):
    """The model's name in tables from an eval.json dict."""
    del result
    return self.title


# The original trains unmasked models ('base' mode) with Adam at 1e-3 whatever --init_lr.
BASE_LR = 1e-3


def objective(term, cfg):
  """The objective (`anp.training.objectives`) of a data term; None: the trainer's MixedCE."""
  from anp.training.objectives import AdvCE, SampledCE, Trades
  if term == "trades":
    return Trades(cfg.trades_beta)
  if term == "adv":
    return AdvCE()
  return SampledCE() if term == "sampled" else None
