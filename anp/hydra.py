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
from anp.model import adam, staircase
from models.subnet import kernel_of, subnet_layers


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

  Every stage needs one. The finetune stage with learned scores needs a prune-stage run of the
  same granularity and prune ratio (HYDRA: "the same pruning ratio as the pruning step"), or
  an AWT search run (`anp.awt`) of the same prune ratio, at --hydra_granularity=weight.
  """
  if not cfg.init_from:
    raise UserError(f"Flag --init_from is required with --method=hydra "
                    f"--hydra_stage={cfg.hydra_stage}: expected a pretrained run "
                    "(--method=at or trades) to prune, or a prune-stage run to finetune. "
                    "Received: none")
  if cfg.hydra_stage == "finetune" and cfg.hydra_scores == "magnitude":
    source = init_run_config(cfg.init_from)
    if source is not None and source.method == "admm" and source.prune_ratio != cfg.prune_ratio:
      raise UserError("Flag --prune_ratio: expected the ADMM run's value, "
                      f"{source.prune_ratio!r}. Received: {cfg.prune_ratio!r}")
  if cfg.hydra_stage != "finetune" or cfg.hydra_scores != "learned":
    return
  source = init_run_config(cfg.init_from)
  has_scores = any(name.endswith("scores/.ATTRIBUTES/VARIABLE_VALUE")
                   for name, _ in tf.train.list_variables(prefix))
  if not has_scores or (source is not None and source.method not in ("hydra", "awt")):
    raise UserError("Flag --init_from: --hydra_stage=finetune with learned scores expected a "
                    "--method=hydra --hydra_stage=prune run or a --method=awt run (or "
                    "--hydra_scores=magnitude for LWM from a pretrained run). "
                    f"Received: {cfg.init_from!r}")
  if source is not None and source.method == "awt":  # its ticket: a per-weight top-k mask
    if cfg.hydra_granularity != "weight":
      raise UserError("Flag --hydra_granularity: expected 'weight' (an AWT run's mask is per "
                      f"weight). Received: {cfg.hydra_granularity!r}")
    if source.prune_ratio != cfg.prune_ratio:
      raise UserError("Flag --prune_ratio: expected the AWT run's value, "
                      f"{source.prune_ratio!r}. Received: {cfg.prune_ratio!r}")
  elif source is not None:
    for key in ("hydra_granularity", "prune_ratio"):
      if getattr(source, key) != getattr(cfg, key):
        raise UserError(f"Flag --{key}: expected the prune run's value, "
                        f"{getattr(source, key)!r}. Received: {getattr(cfg, key)!r}")


def after_init(net, cfg):
  """What a fresh HYDRA run does once --init_from is loaded: scores from the weights, except
  when finetuning a prune run's learned scores."""
  if cfg.hydra_stage == "prune" or cfg.hydra_scores == "magnitude":
    init_scores(net)


def weight_efficiency(net):
  """The table's Memory / Flops / Sparsity of unstructured pruning, from the zeroed weights.

  Sparsity: pruned kernel entries / all kernel entries of the pruned (conv and dense) layers,
  HYDRA's pruning ratio. Memory %: non-zero parameters / all parameters (biases and batch norm
  included, the scores excluded). Flops: multiply-adds of the dense kernels / those of the
  non-zero entries (a kernel entry costs one per output position). Returns None for a net
  without unstructured HYDRA layers.
  """
  net = getattr(net, "net", net)  # through a wrapper such as anp.sap.SapNet
  layers = subnet_layers(net)
  if not layers:
    return None
  kernels = [kernel_of(layer).numpy() for layer in layers]
  total = sum(k.size for k in kernels)
  nonzero = sum(int(np.count_nonzero(k)) for k in kernels)
  macs = sum(k.size * layer.positions for k, layer in zip(kernels, layers))
  sparse_macs = sum(int(np.count_nonzero(k)) * layer.positions
                    for k, layer in zip(kernels, layers))
  excluded = {id(v) for v in net.mask_variables} | {id(layer.kernel) for layer in layers}
  other = sum(int(np.prod(v.shape)) for v in net.weights if id(v) not in excluded)
  return dict(sparsity=1.0 - nonzero / total,
              memory_pct=100.0 * (nonzero + other) / (total + other),
              flops_ratio=macs / max(sparse_macs, 1),
              weights_kept=nonzero, weights_total=total)
