"""Run directories: building the network a config describes, checkpoints, restoring."""

import os

import numpy as np
import tensorflow as tf

from anp import methods
from anp.runs import original_ckpt
from anp.config import Config, architecture, run_config_path
from anp.data import dataset_info
from anp.runs.paths import RunError, check_writable_dir  # noqa: F401 (used from here too)
from models.lenet import LeNet5
from models.vgg import VGG

# Fractions of training after which the original divides the learning rate by 10.
LR_DECAY_POINTS = {"lenet": (0.5, 0.7), "vgg": (0.5, 0.8)}


def build_net(cfg, **options):
  """The network of a resolved config, built on the dataset's input shape: its method's
  (`Method.net_options`: masks, Bayesian or HYDRA layers), or one with `options` instead."""
  info = dataset_info(cfg.dataset)
  options = options or methods.get(cfg.method).net_options(cfg)
  if architecture(cfg.dataset) == "lenet":
    net = LeNet5(info.n_classes, threshold=cfg.thres, bias_init=cfg.bias_init, **options)
  else:
    net = VGG(info.n_classes, threshold=cfg.thres, standardize=cfg.preprocess == "pixel",
              bias_init=cfg.bias_init, **options)
  net(tf.zeros((1,) + info.image_shape))
  return net


def find_checkpoint(path, flag="--model_dir"):
  """A checkpoint prefix from a run directory (its latest) or a checkpoint prefix."""
  if path and os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise RunError(f"Flag {flag}: no checkpoint in directory {path!r}.")
    return latest
  if path and tf.io.gfile.exists(path + ".index"):
    return path
  raise RunError(f"Flag {flag}: {path!r} is neither a run directory with a checkpoint "
                 "nor a checkpoint prefix (a path whose '.index' file exists).")


def locate_checkpoint(path, flag):
  """('original', path) for a checkpoint of the authors' TF1 code, else ('ours', prefix) of
  `find_checkpoint`; RunError when `path` is neither."""
  if original_ckpt.is_original(path):
    return "original", path
  return "ours", find_checkpoint(path, flag)


def restore_net(net, path, flag="--init_from"):
  """Loads the network variables of a checkpoint (a run dir or prefix) into `net`.

  What a method adds on top of a plain network (beta-Bernoulli masks, HYDRA's scores, Bayesian
  log-sigmas) may be absent and keeps its values, so that a standard model can initialise a
  masked one; every other float variable of `net` (kernels, biases, batch-norm parameters and
  statistics) must come from the checkpoint, else RunError (training from random weights
  unawares).
  """
  kind, prefix = locate_checkpoint(path, flag)
  if kind == "original":
    return original_ckpt.restore_original(net, path)["prefix"]
  added = {id(v) for v in net.mask_variables} | {
      id(v) for layer in getattr(net, "bayes_layers", ()) for v in layer.log_sigma_variables}
  required = [v for v in net.variables if id(v) not in added and "float" in str(v.dtype)]
  # Each is set to NaN first: one still NaN after the restore had no checkpoint value.
  before = [v.numpy() for v in required]
  for v in required:
    v.assign(tf.fill(tf.shape(v), tf.constant(np.nan, v.dtype)))
  tf.train.Checkpoint(net=net).restore(prefix).expect_partial()
  missed = [v.path for v in required if np.all(np.isnan(v.numpy()))]
  if missed:
    for v, value in zip(required, before):
      v.assign(value)
    raise RunError(f"Flag {flag}: the checkpoint {prefix!r} holds no values for "
                   f"{len(missed)} of the network's {len(required)} weights (e.g. "
                   f"{missed[0]}); it is not a checkpoint of this architecture.")
  return prefix


def load_run(model_dir):
  """(net, cfg) of a training run directory, with the latest checkpoint loaded."""
  cfg_path = run_config_path(model_dir)
  if not os.path.isfile(cfg_path):
    raise RunError(f"Flag --model_dir: {model_dir!r} holds no {os.path.basename(cfg_path)}; "
                   "expected the --model_dir of a training run.")
  cfg = Config.load(cfg_path).resolved()
  net = build_net(cfg)
  restore_net(net, model_dir, "--model_dir")
  return net, cfg
