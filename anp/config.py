"""Run configuration: one dataclass filled from flags (main.py) or directly (tests)."""

import dataclasses
import json
import os

from anp import methods
from anp.atomic import write_whole
from anp.errors import DataError, UserError

from models.initializers import BIAS_INITS

# Data set -> the paper's network for it, LeNet5-Caffe or VGG-16 (their shapes and sizes:
# `anp.data.dataset_info`).
DATASETS = {"mnist": "lenet", "fashion_mnist": "lenet", "cifar10": "vgg", "cifar100": "vgg"}
PREPROCESS = ("pixel", "original")
# --attack's names (`anp.evaluation.attack_specs` makes them; `strongest` stands for several).
ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "cw", "square",
           "autoattack", "autoattack-rand")
DEFENSES = ("none", "sap")
SAP_GRADIENTS = ("full", "stopped")  # --sap_gradient (anp/evaluation/sap.py)
ATTACK_DTYPES = ("float32", "bfloat16")
HYDRA_STAGES = ("prune", "finetune")
HYDRA_SCORES = ("learned", "magnitude")
HYDRA_GRANULARITIES = ("weight", "channel")
HYDRA_OBJECTIVES = ("trades", "at", "adv")
HYDRA_OPTIMIZERS = ("adam", "sgd")
ADMM_LOSSES = ("adv", "mixed")
STRATEGIES = ("default", "mirrored", "cpu_split", "multi_worker", "tpu")

# Per-dataset defaults of the original README (divyam3897/ANP_VS) and paper. val_examples is
# ours: PGD validation after each epoch costs ~5 s per 1000 LeNet examples but ~65 s per 1000
# VGG-16 examples on 2 cores, so CIFAR validates on 200.
DATASET_DEFAULTS = {
    "mnist": dict(eps=0.3, step_size=0.01, train_attack_steps=20, beta=4.0, lambda_vs=1e-3,
                  val_examples=1000),
    "fashion_mnist": dict(eps=0.3, step_size=0.01, train_attack_steps=20, beta=4.0,
                          lambda_vs=1e-3, val_examples=1000),
    "cifar10": dict(eps=0.03, step_size=0.007, train_attack_steps=10, beta=2.0,
                    lambda_vs=1e-4, val_examples=200),
    # lambda 0.1 for CIFAR-100: the original README's command (an authors' later commit).
    "cifar100": dict(eps=0.03, step_size=0.007, train_attack_steps=10, beta=1.0,
                     lambda_vs=0.1, val_examples=200),
}

# The references' MNIST / Fashion-MNIST settings of the TRADES objective (train_trades_mnist.py:
# 40 steps of 0.01 from x + 0.001 N(0, 1), whose 20 would end within 0.2 of x; beta 1) and of
# CE(x_adv) (the ADMM code's adversarial MNIST config: PGD-40). TRADES' beta is 6 elsewhere
# (train_trades_cifar10.py; HYDRA's default). Weight decay of CE(x_adv) alone: the method's
# (`Method.adv_weight_decay`).
MNIST_ATTACK_STEPS = {"trades": 40, "adv": 40}
TRADES_BETA = {"mnist": 1.0, "fashion_mnist": 1.0, "cifar10": 6.0, "cifar100": 6.0}

# The numeric fields' ranges (None: a default filled in by `resolved`), which the flags'
# parsers (flags.py) state in --help: (expected, check, fields).
NUMBER_RANGES = (
    ("an integer >= 1", lambda v: v >= 1,
     ("epochs", "steps_per_epoch", "batch_size", "bnn_ensemble", "checkpoint_every",
      "admm_every", "awt_ntk_examples", "awt_remask_every", "train_attack_steps", "eval_batch",
      "eval_examples", "square_queries", "restarts", "eot_samples", "cpu_replicas")),
    ("an integer >= 0", lambda v: v >= 0, ("seed", "val_examples", "attack_steps")),
    ("a number > 0", lambda v: v > 0,
     ("init_lr", "bnn_prior_sigma", "bnn_init_sigma", "hydra_lr", "admm_rho", "step_size",
      "sap_frac")),
    ("a number >= 0", lambda v: v >= 0,
     ("adv_weight", "trades_beta", "weight_decay", "beta", "lambda_vs", "awt_kernel_weight",
      "awt_l2", "eps")),
    ("a number in [0, 1)", lambda v: 0 <= v < 1, ("thres", "prune_ratio")))


@dataclasses.dataclass
class Config:
  """Everything a run needs. `None` fields take the dataset's default in `resolved()`."""

  mode: str = "train"
  dataset: str = "mnist"
  method: str = "anp_vs"
  data_dir: str | None = None
  model_dir: str = "runs/default"
  init_from: str | None = None
  preprocess: str = "pixel"
  seed: int | None = 0
  bias_init: str = "glorot"
  # Optimisation (the original's defaults).
  epochs: int = 200
  steps_per_epoch: int | None = None
  batch_size: int = 64
  init_lr: float = 1e-2
  adv_weight: float = 2.0
  trades_beta: float | None = None  # TRADES_BETA (6 where unused)
  bnn_prior_sigma: float | None = None  # Adv-BNN's (anp.methods.bnn.BNN_DEFAULTS)
  bnn_init_sigma: float | None = None
  bnn_ensemble: int = 20
  weight_decay: float | None = None  # 1e-4 but Method.adv_weight_decay for CE(x_adv) alone
  beta: float | None = None
  lambda_vs: float | None = None
  thres: float = 1e-3
  # Attack used in training, and the default attack of evaluation.
  eps: float | None = None
  step_size: float | None = None
  train_attack_steps: int | None = None
  attack_steps: int = 40
  eval_examples: int | None = None
  eval_batch: int = 256
  eval_dir: str | None = None  # where eval.json goes (default: the model's directory)
  val_examples: int | None = None
  jit_compile: bool = False
  compact_attack: bool = True
  train_attack_dtype: str = "float32"
  checkpoint_every: int | None = None
  # Evaluation suite (--mode=eval) and the other modes.
  attack: str = "pgd"
  restarts: int = 1
  square_queries: int = 5000
  eot_samples: int | None = None  # 1, or the method's evaluation default (run_eval)
  source_model_dir: str | None = None
  sanity_checks: bool = False
  # HYDRA (--method=hydra; anp/hydra.py).
  hydra_stage: str = "prune"
  hydra_scores: str = "learned"
  hydra_granularity: str = "weight"
  hydra_objective: str = "trades"
  hydra_optimizer: str = "adam"  # or sgd: the reference's SGD + per-epoch cosine
  hydra_lr: float | None = None  # adam 1e-3; sgd 0.1 prune, 0.01 finetune (the reference's)
  prune_ratio: float = 0.9
  # ADMM (--method=admm; anp/admm.py): initial rho and epochs between Z/U updates.
  admm_rho: float = 1e-3
  admm_every: int | None = None
  admm_loss: str = "adv"  # CE(x_adv) (the authors'), or mixed: at's
  # AWT's ticket search (--method=awt; anp/awt.py): NTT's loss weights (Liu & Zenke 2020),
  # examples of each batch half in the NTK, steps between magnitude re-masks.
  awt_kernel_weight: float = 1e-3
  awt_l2: float = 1e-5
  awt_ntk_examples: int = 8
  awt_remask_every: int = 100
  defense: str = "none"
  sap_frac: float = 1.0
  sap_gradient: str = "full"
  # Devices (anp.training.distribute): not part of a run's identity, so a run may resume on others.
  strategy: str = "default"
  cpu_replicas: int = 2
  mixed_precision: bool = False
  deterministic_ops: bool = False
  export_dir: str | None = None
  runs: str | None = None
  report_dir: str | None = None

  def resolved(self):
    """A copy with the dataset's defaults filled in and every field validated."""
    architecture(self.dataset)  # raises DataError on an unknown dataset
    cfg = dataclasses.replace(self)
    if self.dataset in ("mnist", "fashion_mnist"):
      cfg.preprocess = "pixel"  # the original feeds LeNet x / 255: both modes are the same
    _check_method(cfg.method)
    method = methods.get(cfg.method)
    method.resolve(cfg)
    if cfg.eot_samples is None:
      cfg.eot_samples = 1
    term = cfg.data_term  # the references' settings (MNIST_ATTACK_STEPS above)
    if cfg.train_attack_steps is None and self.dataset in ("mnist", "fashion_mnist"):
      cfg.train_attack_steps = MNIST_ATTACK_STEPS.get(term)
    if cfg.trades_beta is None:
      cfg.trades_beta = TRADES_BETA[self.dataset] if term == "trades" else 6.0
    if cfg.weight_decay is None:
      cfg.weight_decay = method.adv_weight_decay if term == "adv" else 1e-4
    for key, value in DATASET_DEFAULTS[self.dataset].items():
      if getattr(cfg, key) is None:
        setattr(cfg, key, value)
    cfg.validate()
    return cfg

  def validate(self, method_checks=True):
    """UserError for the first bad field. `method_checks=False` leaves out the checks that need
    the method's object, whose module may import TensorFlow: its own (`Method.validate`) and
    deterministic weights for a bfloat16 training attack."""
    def need(ok, flag, expected, value):
      if not ok:
        raise UserError(f"Flag --{flag}: expected {expected}. Received: {value!r}")
    architecture(self.dataset)
    _check_method(self.method)
    method = methods.get(self.method) if method_checks else None
    need(self.preprocess in PREPROCESS, "preprocess", "one of " + ", ".join(PREPROCESS),
         self.preprocess)
    need(self.bias_init in BIAS_INITS, "bias_init", "one of " + ", ".join(BIAS_INITS),
         self.bias_init)
    names = self.attack.split(",")
    need(all(n in ATTACKS + ("strongest",) for n in names) and len(set(names)) == len(names),
         "attack", "one or more (comma-separated, distinct) of strongest, " + ", ".join(ATTACKS),
         self.attack)
    need(self.defense in DEFENSES, "defense", "one of " + ", ".join(DEFENSES), self.defense)
    need(self.strategy in STRATEGIES, "strategy", "one of " + ", ".join(STRATEGIES),
         self.strategy)
    need(not (self.jit_compile and self.strategy != "default"), "jit_compile",
         "--strategy=default (XLA compiles the one-device step; under a strategy the "
         "optimizers' all-reduce is outside it)", f"--strategy={self.strategy}")
    need(self.train_attack_dtype in ATTACK_DTYPES, "train_attack_dtype",
         "one of " + ", ".join(ATTACK_DTYPES), self.train_attack_dtype)
    need(self.train_attack_dtype == "float32" or (
        self.compact_attack and architecture(self.dataset) == "lenet"
        and (method is None or method.deterministic)), "train_attack_dtype",
         "float32 except for LeNet5 (MNIST, Fashion-MNIST) with --compact_attack and "
         "deterministic weights (bfloat16 runs in LeNet5's compact attack function only)",
         self.train_attack_dtype)
    need(self.sap_gradient in SAP_GRADIENTS, "sap_gradient",
         "one of " + ", ".join(SAP_GRADIENTS), self.sap_gradient)
    for flag, values in (("hydra_stage", HYDRA_STAGES), ("hydra_scores", HYDRA_SCORES),
                         ("hydra_granularity", HYDRA_GRANULARITIES),
                         ("hydra_objective", HYDRA_OBJECTIVES),
                         ("hydra_optimizer", HYDRA_OPTIMIZERS), ("admm_loss", ADMM_LOSSES)):
      need(getattr(self, flag) in values, flag, "one of " + ", ".join(values),
           getattr(self, flag))
    if method:
      method.validate(self, need)
    for expected, ok, names in NUMBER_RANGES:
      for flag in names:
        value = getattr(self, flag)
        need(value is None or ok(value), flag, expected, value)

  @property
  def adversarial(self):
    return methods.get(self.method).adversarial

  @property
  def data_term(self):
    """The weights' data term (`Method.data_term`): mixed, trades, adv or sampled."""
    return methods.get(self.method).data_term(self)

  @property
  def masked(self):
    return methods.get(self.method).masked

  @property
  def run_keys(self):
    """The keys of this run's identity: RUN_KEYS and the method's."""
    return RUN_KEYS + methods.get(self.method).run_keys

  def differing(self, other, keys=None):
    """The fields among `keys` (default: `run_keys`) whose values differ in `other`."""
    return [k for k in (self.run_keys if keys is None else keys)
            if getattr(self, k) != getattr(other, k)]

  # The run directory remembers how its model was built.
  def save(self, path):
    # Whole or absent: other workers may be reading it.
    write_whole(path, json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))

  @classmethod
  def load(cls, path):
    with open(path) as f:
      values = json.load(f)
    names = {f.name for f in dataclasses.fields(cls)}
    method = methods.find(values.get("method"))
    values = {**(method.legacy if method else {}), **values}
    return cls(**{k: v for k, v in values.items() if k in names})


# What a training run directory is: these keys define the model and its training
# trajectory, so a run may only be resumed with the same values. The others (--epochs,
# --val_examples, --checkpoint_every, --data_dir, evaluation flags) may change on resume.
RUN_KEYS = ("dataset", "method", "preprocess", "seed", "bias_init", "init_from", "batch_size",
            "steps_per_epoch", "init_lr", "adv_weight", "trades_beta", "weight_decay", "beta",
            "lambda_vs", "thres", "eps", "step_size", "train_attack_steps", "compact_attack",
            # None unless --method=at_bnn (or given): runs saved before they existed match.
            "bnn_prior_sigma", "bnn_init_sigma",
            # Added later too; absent from older config.json files, whose runs load them with
            # their defaults (False, float32): what those runs used.
            "mixed_precision", "train_attack_dtype")


CONFIG_FILE = "config.json"


def architecture(dataset):
  """The paper's network of a data set: 'lenet' or 'vgg'; DataError for an unknown name."""
  if dataset not in DATASETS:
    raise DataError(f"Unknown dataset {dataset!r}. Expected one of: "
                    f"{', '.join(sorted(DATASETS))}.")
  return DATASETS[dataset]


def run_config_path(model_dir):
  return os.path.join(model_dir, CONFIG_FILE)


def _check_method(name):
  if name not in methods.REGISTRY:
    raise UserError(f"Flag --method: expected one of {', '.join(methods.REGISTRY)}. "
                    f"Received: {name!r}")
