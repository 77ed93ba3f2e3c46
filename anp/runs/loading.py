"""The models --mode=eval evaluates: `load_model` opens a training run directory (config.json
and a checkpoint), a checkpoint of the authors' original TF1 code (`anp.runs.original_ckpt`) or a
SavedModel (as --mode=export writes), the latter wrapped as a logits model by
`SavedModelNet`, and returns it with the config that gives its data set and preprocessing
(`original_config` for an original checkpoint).
"""

import dataclasses
import os

import tensorflow as tf

from anp.runs import original_ckpt
from anp.config import Config, run_config_path
from anp.deploy.export import load_saved_model
from anp.runs.rundir import RunError, build_net, load_run


class SavedModelNet:
  """A SavedModel's `serving_default` (images -> probabilities) as a logits model.

  Logits are log-probabilities (cross-entropy, CW and DLR losses are unchanged by the
  per-example shift). It exposes no latent features: its vulnerability is n/a.
  """

  masks = ()
  unit_counts = ()

  def __init__(self, path):
    loaded = load_saved_model(path)
    self.loaded = loaded
    self.fn = loaded.signatures["serving_default"] if hasattr(loaded, "signatures") else loaded

  def __call__(self, x, training=False, return_features=False):
    del training
    probs = self.fn(images=x)
    probs = probs["probabilities"] if isinstance(probs, dict) else probs
    logits = tf.math.log(tf.maximum(tf.cast(probs, tf.float32), 1e-30))
    return (logits, []) if return_features else logits


def _is_saved_model(path):
  return bool(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def load_model(path, cfg, flag="--model_dir"):
  """(net, run_cfg, kind) of a run directory, an original checkpoint or a SavedModel.

  kind: 'run' | 'original_checkpoint' | 'saved_model'. `cfg` (the flags) gives the data set
  and preprocessing of models that do not record them.
  """
  if _is_saved_model(path):
    # The export may keep the run's config.json next to saved_model.pb.
    saved = run_config_path(path)
    run_cfg = Config.load(saved) if os.path.isfile(saved) else dataclasses.replace(cfg)
    return SavedModelNet(path), run_cfg.resolved(), "saved_model"
  if path and os.path.isfile(run_config_path(path)):
    net, run_cfg = load_run(path)
    return net, run_cfg, "run"
  if original_ckpt.is_original(path):
    net, run_cfg = load_original_run(path, cfg)
    return net, run_cfg, "original_checkpoint"
  raise RunError(f"Flag {flag}: {path!r} is not a training run directory (with "
                 "config.json and a checkpoint), a checkpoint of the original code, or a "
                 "SavedModel directory.")


def original_config(path, cfg):
  """The resolved run Config under which an original checkpoint is evaluated.

  `cfg` gives the flags (attack, data_dir, thres, ...). The dataset follows --dataset when
  it fits the checkpoint's architecture (LeNet: mnist/fashion_mnist; VGG: cifar10 with 10
  classes, cifar100 with 100), else mnist / cifar10 / cifar100. The method is --method when
  its masking matches the checkpoint (bbd variables present or not), else anp_vs (masked)
  or standard. Preprocess: 'original' for VGG (per-image standardization outside the
  network), 'pixel' for LeNet (the original feeds MNIST as x / 255).
  """
  info = original_ckpt.describe(path)
  if info is None:
    raise original_ckpt.OriginalCheckpointError(
        f"{path!r} holds no checkpoint of the original code.")
  if info["arch"] == "lenet":
    dataset = cfg.dataset if cfg.dataset in ("mnist", "fashion_mnist") else "mnist"
    preprocess = "pixel"
  else:
    by_classes = {10: "cifar10", 100: "cifar100"}
    if info["n_classes"] not in by_classes:
      raise original_ckpt.OriginalCheckpointError(
          f"{info['prefix']!r}: VGG with {info['n_classes']} classes; expected 10 (CIFAR-10) "
          "or 100 (CIFAR-100).")
    dataset = by_classes[info["n_classes"]]
    preprocess = "original"
  run_cfg = Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})
  run_cfg.dataset, run_cfg.preprocess = dataset, preprocess
  if run_cfg.masked != info["masked"]:
    run_cfg.method = "anp_vs" if info["masked"] else "standard"
  return run_cfg.resolved()


def load_original_run(path, cfg):
  """(net, run_cfg) of an original checkpoint (directory or prefix), weights loaded."""
  run_cfg = original_config(path, cfg)
  net = build_net(run_cfg)
  original_ckpt.restore_original(net, path)
  return net, run_cfg
