"""--mode=prune / --mode=export: SavedModels for TF Serving.

--mode=prune writes the compact model of a masked run (`anp.deploy.compact.compact_model`: pruned
units removed, logits equal to the masked network's) with `pruning.json` (parameters, FLOPs,
the paper's columns, the logit check); --mode=export writes the network as trained (an Adv-BNN
run as its stochastic ensemble, `--defense=sap` with SAP after every activation). Both serve
`images` -> probabilities, classes, logits (`save_for_serving`), with the model's config.json
and MODEL_CARD.md (`anp.deploy.card`).
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from anp import data, methods
from anp.deploy import efficiency
from anp.atomic import write_whole
from anp.deploy.card import PRUNING_JSON, model_config, write_model_card
from anp.deploy.compact import compact_model, served_units
from anp.config import architecture, run_config_path
from anp.errors import UserError
from anp.runs.rundir import build_net, check_writable_dir, load_run
from anp.evaluation.sap import sap

layers = keras.layers

# ----------------------------------------------------------------------------------------------
# SavedModel.


class _Serving(tf.Module):
  """images [B, H, W, C] float32 in [0, 1] -> probabilities, classes, logits."""

  def __init__(self, model, image_shape, standardize):
    super().__init__()
    self.model = model
    self.standardize = standardize
    self.image_shape = tuple(int(d) for d in image_shape)
    spec = tf.TensorSpec((None,) + tuple(image_shape), tf.float32, name="images")
    self.serve = tf.function(self._serve, input_signature=[spec])

  def _serve(self, images):
    # Signature wrappers do not enforce the declared shape: check it, or a wrong image size
    # could flow through Flatten/gather into a silently wrong answer.
    expected = tf.constant(self.image_shape, tf.int32)
    check = tf.debugging.assert_equal(
        tf.shape(images)[1:], expected,
        message="images must have shape [batch, %d, %d, %d] (float32 pixels in [0, 1])"
        % self.image_shape)
    with tf.control_dependencies([check]):
      images = tf.identity(images)
    x = tf.image.per_image_standardization(images) if self.standardize else images
    logits = self.model(x, training=False)
    return {"probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, -1, output_type=tf.int64),
            "logits": logits}


def next_version(export_dir):
  """The next free integer version directory under export_dir (TF Serving's layout)."""
  versions = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(
      export_dir) else []
  return max(versions, default=0) + 1


def save_for_serving(model, export_dir, image_shape, standardize=False, run_cfg=None):
  """Writes export_dir/<version>/ with a `serving_default` signature; returns that path.

  Input `images` (float32 [batch, H, W, C], pixels in [0, 1]); outputs `probabilities`,
  `classes` (int64) and `logits`. `standardize` puts per-image standardisation inside,
  for models trained with --preprocess=original, so serving always takes pixels.
  """
  path = os.path.join(export_dir, str(next_version(export_dir)))
  module = _Serving(model, image_shape, standardize)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  if run_cfg is not None:  # lets --mode=eval evaluate the export like its run
    write_whole(run_config_path(path), json.dumps(model_config(run_cfg), indent=2) + "\n")
  return path


def load_saved_model(path):
  """The loaded SavedModel (use `.signatures['serving_default'](images=...)`)."""
  return tf.saved_model.load(path)


# ----------------------------------------------------------------------------------------------
# --mode=prune / --mode=export.


def pruning_report(net, compact, cfg, x_test):
  """The efficiency figures of pruning.json."""
  info = data.dataset_info(cfg.dataset)
  arch = architecture(cfg.dataset)
  weights = efficiency.weight_efficiency(net)
  # Weight pruning keeps every unit of the net; its compact model serves those left connected.
  n_active = served_units(compact) if weights else net.n_active()
  masked_fn = lambda t: net(t, training=False)  # noqa: E731
  # A weight-pruned net multiplies each kernel by its mask at every call: its unpruned FLOPs
  # are those of the same architecture with plain layers.
  unpruned = build_net(cfg, masked=False) if weights else net
  dense_flops = efficiency.forward_flops(lambda t: unpruned(t, training=False),
                                         info.image_shape)
  compact_flops = efficiency.forward_flops(lambda t: compact(t, training=False),
                                           info.image_shape)
  diff = float(np.max(np.abs(masked_fn(x_test).numpy() - compact(x_test).numpy())))
  return dict(
      dataset=cfg.dataset, method=cfg.method, threshold=cfg.thres,
      layers=[dict(site=i + 1, kept=k, total=t)
              for i, (k, t) in enumerate(zip(n_active, net.unit_counts))],
      n_active=n_active, n_units=list(net.unit_counts),
      params=dict(dense=efficiency.count_params(net.weights, exclude=net.mask_variables),
                  compact=efficiency.served_params(compact),
                  bytes=efficiency.weight_bytes(compact)),
      flops=dict(dense=int(dense_flops), compact=int(compact_flops),
                 ratio=dense_flops / max(compact_flops, 1)),
      paper=efficiency.paper_columns(arch, n_active, list(net.unit_counts), info.n_classes),
      max_abs_logit_diff=diff, checked_examples=int(len(x_test)),
      weight_pruning=weights)


def format_report(report):
  lines = [f"{'site':>4}  {'kept':>5} / total"]
  lines += [f"{r['site']:>4}  {r['kept']:>5} / {r['total']}" for r in report["layers"]]
  p, f, paper = report["params"], report["flops"], report["paper"]
  lines += [f"parameters: {p['dense']:,} -> {p['compact']:,} ({p['compact'] / p['dense']:.2%})",
            f"FLOPs/image: {f['dense']:,} -> {f['compact']:,} (x{f['ratio']:.2f} fewer)",
            *([f"weights kept: {w['weights_kept']:,} of {w['weights_total']:,} (sparsity "
               f"{w['sparsity']:.2%}; Memory {w['memory_pct']:.2f}%, Flops x{w['flops_ratio']:.2f} "
               f"in the non-zero weights); kernels under a quarter full stored as their "
               f"non-zero entries, "
               f"{p['bytes'] / 1024:.1f} KiB of weights"]
              if (w := report.get("weight_pruning")) else
              [f"paper formulas: Memory {paper['memory_pct']:.2f}%  Flops "
               f"x{paper['flops_ratio']:.2f}  Sparsity {paper['sparsity_pct']:.2f}%"]),
            f"max |masked - compact| logits on {report['checked_examples']} test images: "
            f"{report['max_abs_logit_diff']:.2e}"]
  return "\n".join(lines)


def run_export(cfg, arrays=None):
  """--mode=prune (compact model) or --mode=export (the model as trained) to --export_dir."""
  if not cfg.export_dir:
    raise UserError(f"Flag --export_dir is required with --mode={cfg.mode}.")
  check_writable_dir(cfg.export_dir, "--export_dir")
  net, run_cfg = load_run(cfg.model_dir)
  method = methods.get(run_cfg.method)
  method.check_export(cfg.mode)
  if cfg.defense == "sap" and cfg.mode == "prune":
    raise UserError("Flag --defense=sap: expected --mode=export (SAP samples the activations "
                    "of the trained network, which the compact model does not expose). "
                    "Received: --mode=prune")
  info = data.dataset_info(run_cfg.dataset)
  standardize = run_cfg.preprocess == "original" and architecture(run_cfg.dataset) == "vgg"
  serving_cfg = dataclasses.replace(run_cfg, preprocess="pixel")  # the export takes pixels
  os.makedirs(cfg.export_dir, exist_ok=True)
  if cfg.mode == "export":
    net = method.serving_net(net, cfg, serving_cfg)  # e.g. Adv-BNN's ensemble
    hook = None
    if cfg.defense == "sap":  # every served call draws a new SAP sample of every activation
      serving_cfg.defense, serving_cfg.sap_frac = "sap", cfg.sap_frac
      serving_cfg.sap_gradient = cfg.sap_gradient
      hook = lambda h: sap(h, cfg.sap_frac,  # noqa: E731
                           differentiable=cfg.sap_gradient == "full")
      print(f"SAP (frac {cfg.sap_frac:g}) after every latent activation: every call of the "
            "SavedModel is random; attack it with --eot_samples.")
    path = save_for_serving(inference_model(net, info.image_shape, hook), cfg.export_dir,
                            info.image_shape, standardize, serving_cfg)
    write_model_card(cfg.export_dir, cfg.model_dir)
    print(f"SavedModel written to {path}, with {os.path.join(path, 'MODEL_CARD.md')}")
    return dict(path=path)
  compact = compact_model(net)
  _, _, x_te, y_te = arrays or data.load_arrays(run_cfg.dataset, cfg.data_dir or run_cfg.data_dir,
                                                test_only=True)
  n = min(cfg.eval_examples or 1000, len(x_te))
  x_test = next(iter(data.make_dataset(x_te[:n], y_te[:n], n, training=False,
                                       preprocess=run_cfg.preprocess)))[0]
  report = pruning_report(net, compact, run_cfg, x_test)
  path = save_for_serving(compact, cfg.export_dir, info.image_shape, standardize, serving_cfg)
  report["saved_model"] = path
  # A copy inside the version directory lets --mode=eval report the export's sparsity.
  for folder in (cfg.export_dir, path):
    write_whole(os.path.join(folder, PRUNING_JSON), json.dumps(report, indent=2))
  write_model_card(cfg.export_dir, cfg.model_dir)
  print(format_report(report))
  print(f"SavedModel written to {path}, with {os.path.join(path, 'MODEL_CARD.md')}")
  return report


def inference_model(net, image_shape, activation_hook=None):
  """A Keras model running the masked `net` in inference mode (masks at E[pi]), with
  `activation_hook` (e.g. SAP) after every latent activation when given."""
  return keras.Sequential([keras.Input(image_shape), InferenceOnly(net, activation_hook)])


class InferenceOnly(layers.Layer):
  """Wraps a masked net so that it always runs in inference mode (masks at E[pi])."""

  def __init__(self, net, activation_hook=None, **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.activation_hook = activation_hook

  def call(self, x):
    if self.activation_hook is None:
      return self.net(x, training=False)
    return self.net(x, training=False, activation_hook=self.activation_hook)

