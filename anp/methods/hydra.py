"""HYDRA (Sehwag, Wang, Mittal & Jana, NeurIPS 2020) and its LWM baseline, --method=hydra.

Three stages, each a run directory chained by --init_from (the reference code,
inspire-group/hydra, runs them as `--exp-mode pretrain | prune | finetune`):

1. pretrain: `--method=at` or `--method=trades` (HYDRA's adversarial trainer is TRADES);
2. prune (`--hydra_stage=prune`): the pretrained weights and biases are frozen; one importance
   score per weight (or per unit, `--hydra_granularity=channel`) is trained with the same
   robust loss; each layer keeps its top k = 1 - `--prune_ratio` by |score|, the mask's
   gradient passed straight through to the scores (`models.subnet`). Batch-norm parameters
   keep training, as the reference's default (its --freeze-bn is off);
3. finetune (`--hydra_stage=finetune`): the scores are frozen, the kept weights train.

Scores start scaled to the pretrained weights, s = sqrt(6 / fan_in) * w / max|w| per layer
(the reference's `--scaled-score-init`), so that the first mask is least-weight-magnitude
pruning. LWM (the paper's baseline) is that mask kept: finetune straight from the pretrained
run with `--hydra_scores=magnitude`.

Both stages train with one optimizer (`optimizer`): by default Adam at --hydra_lr (1e-3) with
the original's x0.1 decay, as every unmasked method here; `--hydra_optimizer=sgd` is the
reference's SGD (momentum 0.9) with its per-epoch cosine schedule (`CosineEpochs`), at 0.1 for
pruning and 0.01 for finetuning unless --hydra_lr is given.

This module says which variables each stage trains (`stage_variables`), initialises scores
(`init_scores`), builds the stages' optimizer, checks a stage's --init_from (`check_init_from`)
and counts the zeroed weights of unstructured pruning (`weight_efficiency`).
"""

import math
import os

import keras
import numpy as np
import tensorflow as tf

from anp.config import Config, run_config_path
from anp.errors import UserError
from anp.methods.base import Method
from anp.training.model import adam, staircase
from models.subnet import subnet_layers


def score_variables(net):
  """Every HYDRA score variable of `net` (unstructured layers' and TopKMask sites')."""
  return [v for v in net.mask_variables if v.name.endswith("scores")]


def _is_batch_norm(v):
  return v.path.split("/")[-2].startswith("bn") and v.name in ("gamma", "beta")


def stage_variables(net, stage):
  """The variables the stage's optimizer trains.

  prune: the scores and the batch-norm gamma / beta (weights and biases frozen);
  finetune: every trainable variable but the scores.
  """
  scores = {id(v) for v in score_variables(net)}
  if stage == "prune":
    return [v for v in net.trainable_variables if id(v) in scores or _is_batch_norm(v)]
  if stage == "finetune":
    return [v for v in net.trainable_variables if id(v) not in scores]
  raise ValueError(f"Expected stage 'prune' or 'finetune'. Received: stage={stage!r}")


class CosineEpochs(keras.optimizers.schedules.LearningRateSchedule):
  """The reference's `cosine_schedule` (utils/schedules.py), set once per epoch: epoch
  e = step // steps_per_epoch (0-based) trains at lr * (1 + cos((e - 1) / epochs * pi)) / 2."""

  def __init__(self, lr, epochs, steps_per_epoch):
    self.lr, self.epochs, self.steps_per_epoch = float(lr), int(epochs), int(steps_per_epoch)

  def __call__(self, step):
    epoch = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch), tf.float32)
    return self.lr * 0.5 * (1.0 + tf.cos((epoch - 1.0) / self.epochs * math.pi))

  def get_config(self):
    return dict(lr=self.lr, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch)


def optimizer(cfg, total_steps, decay):
  """The stages' optimizer of a resolved config: Adam with the staircase at `decay`, or SGD
  (momentum 0.9) with `CosineEpochs` (weight decay is the trainer's L2 term, --weight_decay
  1e-4 = the reference's SGD weight_decay)."""
  if cfg.hydra_optimizer == "sgd":
    epochs = max(1, cfg.epochs)
    return keras.optimizers.SGD(CosineEpochs(cfg.hydra_lr, epochs, max(1, total_steps // epochs)),
                                momentum=0.9)
  return adam(staircase(cfg.hydra_lr, total_steps, decay))


def _scaled(values, fan_in):
  """HYDRA's scaled score: sqrt(6 / fan_in) * values / max|values| (0 where all are 0)."""
  peak = tf.reduce_max(tf.abs(values))
  scale = tf.math.divide_no_nan(tf.constant(math.sqrt(6.0 / fan_in), values.dtype), peak)
  return values * scale


def _unit_sites(net):
  """(kernel, axis of the site's units) per mask site, in the order of `net.masks`.

  A conv channel site (the mask acts on the conv's output) is the kernel's last axis; a dense
  input site (the mask acts on the dense layer's input) is the kernel's first axis.
  """
  if hasattr(net, "blocks"):  # VGG
    return ([(b["conv"].kernel, 3) for b in net.blocks]
            + [(net.dense_fc1.kernel, 0), (net.dense_fc2.kernel, 0)])
  return [(net.conv1.kernel, 3), (net.conv2.kernel, 3), (net.dense3.kernel, 0),
          (net.dense4.kernel, 0)]


def init_scores(net):
  """Sets every score from the current (pretrained) weights.

  Unstructured: s = sqrt(6 / fan_in) * w / max|w| per layer (fan_in = kernel size x input
  channels, or the dense layer's inputs), as the reference. Channel sites: the same scaling of
  each unit's mean |w| over the weights that produce it (a conv filter) or that read it (a
  dense row), so that the initial mask keeps the units of largest mean weight magnitude.
  """
  for layer in subnet_layers(net):
    kernel = tf.convert_to_tensor(layer.kernel)
    layer.scores.assign(_scaled(kernel, int(np.prod(kernel.shape[:-1]))))
  if net.masks:
    for mask, (kernel, axis) in zip(net.masks, _unit_sites(net)):
      kernel = tf.convert_to_tensor(kernel)
      other = [a for a in range(kernel.shape.rank) if a != axis]
      magnitude = tf.reduce_mean(tf.abs(kernel), axis=other)
      mask.scores.assign(_scaled(magnitude, int(np.prod([kernel.shape[a] for a in other]))))


def init_run_config(path):
  """The Config of --init_from when it is (or lies in) one of our run directories, else None."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  cfg_path = run_config_path(folder)
  return Config.load(cfg_path) if os.path.isfile(cfg_path) else None


def check_init_from(cfg, prefix):
  """UserError unless --init_from (checkpoint `prefix`) can start this HYDRA stage.

  Every stage needs one. The finetune stage with learned scores needs a run whose ticket
  (`Method.ticket`) is learned scores (a prune-stage run: same granularity and prune ratio,
  HYDRA's "the same pruning ratio as the pruning step") or a per-weight mask (an AWT search
  run: same prune ratio, --hydra_granularity=weight); with magnitude scores, a run pruned by
  magnitude (ADMM) needs its prune ratio.
  """
  from anp import methods
  if not cfg.init_from:
    raise UserError(f"Flag --init_from is required with --method=hydra "
                    f"--hydra_stage={cfg.hydra_stage}: expected a pretrained run "
                    "(--method=at or trades) to prune, or a prune-stage run to finetune. "
                    "Received: none")
  source = init_run_config(cfg.init_from)
  method = methods.get(source.method) if source is not None else None
  ticket, label = (method.ticket, method.ticket_label) if method else (None, None)
  if cfg.hydra_stage == "finetune" and cfg.hydra_scores == "magnitude":
    if ticket == "magnitude" and source.prune_ratio != cfg.prune_ratio:
      raise UserError(f"Flag --prune_ratio: expected the {label} run's value, "
                      f"{source.prune_ratio!r}. Received: {cfg.prune_ratio!r}")
  if cfg.hydra_stage != "finetune" or cfg.hydra_scores != "learned":
    return
  has_scores = any(name.endswith("scores/.ATTRIBUTES/VARIABLE_VALUE")
                   for name, _ in tf.train.list_variables(prefix))
  if not has_scores or (source is not None and ticket not in ("scores", "weight_mask")):
    raise UserError("Flag --init_from: --hydra_stage=finetune with learned scores expected a "
                    "--method=hydra --hydra_stage=prune run or a --method=awt run (or "
                    "--hydra_scores=magnitude for LWM from a pretrained run). "
                    f"Received: {cfg.init_from!r}")
  keys = (("prune_ratio",) if ticket == "weight_mask"
          else ("hydra_granularity", "prune_ratio") if source is not None else ())
  if ticket == "weight_mask" and cfg.hydra_granularity != "weight":
    raise UserError(f"Flag --hydra_granularity: expected 'weight' (an {label} run's mask is "
                    f"per weight). Received: {cfg.hydra_granularity!r}")
  for key in keys:
    if getattr(source, key) != getattr(cfg, key):
      raise UserError(f"Flag --{key}: expected the {label} run's value, "
                      f"{getattr(source, key)!r}. Received: {getattr(cfg, key)!r}")


def after_init(net, cfg):
  """What a fresh HYDRA run does once --init_from is loaded: scores from the weights, except
  when finetuning a prune run's learned scores."""
  if cfg.hydra_stage == "prune" or cfg.hydra_scores == "magnitude":
    init_scores(net)


def row_settings(cfg):
  """What a HYDRA row's name needs from its run config (eval.json's `hydra`)."""
  source = init_run_config(cfg.init_from) if cfg.init_from else None
  return dict(stage=cfg.hydra_stage, scores=cfg.hydra_scores,
              granularity=cfg.hydra_granularity, objective=cfg.hydra_objective,
              prune_ratio=cfg.prune_ratio, source_method=source.method if source else None)


OBJECTIVE_LABELS = dict(adv="CE(x_adv)", at="the AT loss", trades="the TRADES loss")


def row_name(settings):
  """'HYDRA', 'LWM' (magnitude scores) or the ticket_label of the run finetuned when its
  ticket decided the mask: magnitude pruning ('ADMM') or a per-weight mask finetuned with
  learned scores ('AWT'); e.g. 'HYDRA 90% channels (prune stage)', 'AWT 90%'. With
  --prune_ratio=0 nothing is pruned: the run it started from, trained further on the stage's
  loss ('AT + CE(x_adv), dense'), a pruned row's dense control."""
  from anp import methods
  name = "LWM" if settings["scores"] == "magnitude" else "HYDRA"
  # `after_admm`: the eval.json files written before `source_method` (ADMM runs).
  source = methods.find(settings.get("source_method") or (
      "admm" if settings.get("after_admm") else None))
  if not settings["prune_ratio"]:
    start = source.title if source is not None else name
    return f"{start} + {OBJECTIVE_LABELS[settings['objective']]}, dense"
  if source is not None and (source.ticket == "magnitude" or (
      source.ticket == "weight_mask" and settings["scores"] == "learned")):
    name = source.ticket_label
  name += f" {100 * settings['prune_ratio']:g}%"
  if settings["granularity"] == "channel":
    name += " channels"
  if settings["stage"] == "prune":
    name += " (prune stage)"
  return name


class Hydra(Method):
  """HYDRA's prune or finetune stage (--hydra_stage), LWM with --hydra_scores=magnitude."""

  name, title = "hydra", "HYDRA"
  run_keys = ("hydra_stage", "hydra_scores", "hydra_granularity", "hydra_objective",
              "prune_ratio", "hydra_optimizer", "hydra_lr")
  adv_weight_decay = 0.0  # the ADMM code's Adam retraining (--hydra_objective=adv)
  ticket, ticket_label = "scores", "prune"

  def resolve(self, cfg):
    if cfg.hydra_lr is None:
      cfg.hydra_lr = (1e-3 if cfg.hydra_optimizer == "adam"
                      else 0.1 if cfg.hydra_stage == "prune" else 0.01)

  def validate(self, cfg, need):
    need(not (cfg.hydra_scores == "magnitude" and cfg.hydra_stage == "prune"),
         "hydra_scores", "'learned' with --hydra_stage=prune (magnitude scores are never "
         "trained: LWM is --hydra_stage=finetune --hydra_scores=magnitude)", cfg.hydra_scores)

  def data_term(self, cfg):
    return "mixed" if cfg.hydra_objective == "at" else cfg.hydra_objective

  def net_options(self, cfg):
    return dict(masked=False, hydra=cfg.hydra_granularity, prune_ratio=cfg.prune_ratio)

  def check_init_from(self, cfg, prefix):
    check_init_from(cfg, prefix)

  def make_trainer(self, net, cfg, n_train, total_steps, wrap):
    """One optimizer over the stage's variables (`stage_variables`)."""
    from anp.config import architecture
    from anp.runs.rundir import LR_DECAY_POINTS
    trained = (stage_variables(net, cfg.hydra_stage), [])
    weight_opt = wrap(optimizer(cfg, total_steps, LR_DECAY_POINTS[architecture(cfg.dataset)]))
    weight_opt.build(trained[0])
    return self.compile_trainer(net, cfg, n_train, weight_opt, trained_variables=trained)

  def start(self, trainer, cfg):
    after_init(trainer.net, cfg)

  def row_settings(self, cfg):
    return row_settings(cfg)

  def row_name(self, result):
    return row_name(result["hydra"]) if result.get("hydra") else self.title
