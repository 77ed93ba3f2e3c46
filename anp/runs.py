"""Run directories: building the network a config describes, checkpoints, restoring."""

import os

import numpy as np
import tensorflow as tf

from anp.config import Config, run_config_path
from anp.data import dataset_info
from anp.errors import UserError
from models.lenet import LeNet5
from models.vgg import VGG

# Fractions of training after which the original divides the learning rate by 10.
LR_DECAY_POINTS = {"lenet": (0.5, 0.7), "vgg": (0.5, 0.8)}


class RunError(UserError):
  """A model directory or checkpoint that cannot be used; the message says why."""


def check_writable_dir(path, flag):
  """RunError unless `path` is a directory, or can be made one, that we may write in."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise RunError(f"Flag {flag}: {path!r} is a file; expected a directory.")
  parent = os.path.abspath(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise RunError(f"Flag {flag}: cannot write in {parent!r} (permission denied).")


def architecture(dataset):
  return "lenet" if dataset_info(dataset).image_shape == (28, 28, 1) else "vgg"


def build_net(cfg):
  """The (masked) network of a resolved config, built on the dataset's input shape."""
  info = dataset_info(cfg.dataset)
  # Adv-BNN: Bayesian conv/dense layers, prior N(0, sigma_0^2), initial posterior sigma.
  # AWT's search (anp.awt): HYDRA's unstructured layers, the mask from the weights' magnitudes.
  variant = (dict(bayes=(cfg.bnn_prior_sigma, cfg.bnn_init_sigma)) if cfg.method == "at_bnn"
             else dict(hydra=cfg.hydra_granularity, prune_ratio=cfg.prune_ratio)
             if cfg.method == "hydra" else dict(hydra="weight", prune_ratio=cfg.prune_ratio)
             if cfg.method == "awt" else {})
  if architecture(cfg.dataset) == "lenet":
    net = LeNet5(info.n_classes, masked=cfg.masked, threshold=cfg.thres,
                 bias_init=cfg.bias_init, **variant)
  else:
    net = VGG(info.n_classes, masked=cfg.masked, threshold=cfg.thres,
              standardize=cfg.preprocess == "pixel", bias_init=cfg.bias_init, **variant)
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
  from anp import original_ckpt  # late import: original_ckpt imports anp.runs
  if original_ckpt.is_original(path):
    return "original", path
  return "ours", find_checkpoint(path, flag)


def restore_net(net, path, flag="--init_from"):
  """Loads the network variables of a checkpoint (a run dir or prefix) into `net`.

  Only variables present in both are loaded, so a standard model can initialise a
  masked one (the masks keep their initial values); but every weight kernel of `net` must
  come from the checkpoint, else RunError (training from random weights unawares).
  """
  kind, prefix = locate_checkpoint(path, flag)
  if kind == "original":
    from anp import original_ckpt  # late import: original_ckpt imports anp.runs
    return original_ckpt.restore_original(net, path)["prefix"]
  # Every kernel is set to NaN first: one still NaN after the restore had no checkpoint value.
  kernels = [v for v in net.variables if v.name.endswith("kernel")]
  before = [v.numpy() for v in kernels]
  for v in kernels:
    v.assign(tf.fill(tf.shape(v), tf.constant(np.nan, v.dtype)))
  # expect_partial: masks, scores or sigmas absent from the checkpoint keep their values.
  tf.train.Checkpoint(net=net).restore(prefix).expect_partial()
  missed = [v.path for v in kernels if np.all(np.isnan(v.numpy()))]
  if missed:
    for v, value in zip(kernels, before):
      v.assign(value)
    raise RunError(f"Flag {flag}: the checkpoint {prefix!r} holds no weights for "
                   f"{len(missed)} of the network's {len(kernels)} weight kernels (e.g. "
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
