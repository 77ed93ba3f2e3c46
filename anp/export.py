"""--mode=prune / --mode=export: compact pruned models and SavedModels for TF Serving.

`compact_model(net)` is a pure function (the trained network is never edited): it returns a
plain Keras model without mask layers in which every unit or channel whose E[pi] is at or
below the threshold is physically removed and the surviving mask values E[pi] are folded
into the weights. Its logits equal the masked network's inference logits. HYDRA's networks
(`anp.hydra`) go the same way: a channel-pruned one (`TopKMask` sites) loses its pruned units
like a masked one; a weight-pruned one keeps its dense shapes, its pruned kernel entries 0.

VGG: the mask acts before batch norm, so a pruned channel is not zero after BN + ReLU but
the constant relu(beta - gamma * mean / sqrt(var + eps)), which the next layer still sees.
The compact model folds it exactly: into a per-position bias map of the next conv (zero
padding makes the borders differ from the interior) or into the bias of the next dense
layer. The original code counts such channels as removed without accounting for this.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from anp import data, efficiency, hydra
from anp.bnn import EnsembleLogits
from anp.config import run_config_path
from anp.errors import UserError
from anp.runs import architecture, check_writable_dir, load_run
from models.lenet import LeNet5
from models.subnet import kernel_of

layers = keras.layers


# ----------------------------------------------------------------------------------------------
# Small layers of the compact models.


@keras.saving.register_keras_serializable(package="anp")
class Standardize(layers.Layer):
  """tf.image.per_image_standardization, the input normalisation of VGG."""

  def call(self, x):
    return tf.image.per_image_standardization(x)


@keras.saving.register_keras_serializable(package="anp")
class GatherFeatures(layers.Layer):
  """Keeps the features at fixed indices of the last axis: [B, n] -> [B, len(indices)]."""

  def __init__(self, indices, **kwargs):
    super().__init__(**kwargs)
    self.indices = [int(i) for i in indices]

  def call(self, x):
    return tf.gather(x, self.indices, axis=-1)

  def get_config(self):
    return {**super().get_config(), "indices": self.indices}


@keras.saving.register_keras_serializable(package="anp")
class AddMap(layers.Layer):
  """Adds a constant map (the folded pruned channels of the previous block) [H, W, C]."""

  def __init__(self, shape, **kwargs):
    super().__init__(**kwargs)
    self.map_shape = tuple(int(s) for s in shape)
    self.value = self.add_weight(name="map", shape=self.map_shape, initializer="zeros",
                                 trainable=False)

  def call(self, x):
    return x + self.value

  def get_config(self):
    return {**super().get_config(), "shape": list(self.map_shape)}


# ----------------------------------------------------------------------------------------------
# What each mask site keeps.


def _site(net, i, units):
  """(kept indices, their mask values) of mask site i; everything with value 1 unmasked."""
  if not net.masks:
    return np.arange(units), np.ones(units, np.float32)
  mask = net.masks[i].inference_mask().numpy()
  kept = np.flatnonzero(mask > 0)
  return kept, mask[kept]


def _np(v):
  return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float32)


def _set(layer, *values):
  layer.set_weights([np.asarray(v, np.float32) for v in values])


def _compact_lenet(net):
  k1, m1 = _site(net, 0, 20)
  k2, m2 = _site(net, 1, 50)
  k3, m3 = _site(net, 2, 800)
  k4, m4 = _site(net, 3, 500)
  w1, b1 = _np(kernel_of(net.conv1)), _np(net.conv1.bias)
  w2, b2 = _np(kernel_of(net.conv2)), _np(net.conv2.bias)
  w3, b3 = _np(kernel_of(net.dense3)), _np(net.dense3.bias)
  w4, b4 = _np(kernel_of(net.dense4)), _np(net.dense4.bias)

  # A flattened feature (h, w, c), index (h*4 + w)*50 + c, survives when conv2 keeps c and
  # bbd3 keeps the index; in the compact flatten it sits at (h*4 + w)*len(k2) + pos(c).
  pos_of_channel = {c: j for j, c in enumerate(k2)}
  survivors, rows, scale = [], [], []
  value3 = dict(zip(k3, m3))
  for index in range(800):
    hw, c = divmod(index, 50)
    if c in pos_of_channel and index in value3:
      survivors.append(hw * len(k2) + pos_of_channel[c])
      rows.append(index)
      scale.append(value3[index])

  x = inputs = keras.Input((28, 28, 1), name="images")
  conv1 = layers.Conv2D(len(k1), 5, activation="relu", name="conv1")
  x = layers.MaxPooling2D(2, 2)(conv1(x))
  conv2 = layers.Conv2D(len(k2), 5, activation="relu", name="conv2")
  x = layers.Flatten()(layers.MaxPooling2D(2, 2)(conv2(x)))
  x = GatherFeatures(survivors, name="gather3")(x)
  dense3 = layers.Dense(len(k4), activation="relu", name="dense3")
  dense4 = layers.Dense(net.n_classes, name="dense4")
  model = keras.Model(inputs, dense4(dense3(x)), name="lenet5_compact")
  _set(conv1, w1[..., k1] * m1, b1[k1] * m1)
  _set(conv2, w2[:, :, k1][..., k2] * m2, b2[k2] * m2)
  _set(dense3, (w3[rows] * np.asarray(scale)[:, None])[:, k4], b3[k4])
  _set(dense4, w4[k4] * m4[:, None], b4)
  return model


def _bn_constant(bn):
  """relu(BN(0)) per channel: what a pruned channel becomes after BN + ReLU."""
  gamma, beta = _np(bn.gamma), _np(bn.beta)
  mean, var = _np(bn.moving_mean), _np(bn.moving_variance)
  return np.maximum(beta - gamma * mean / np.sqrt(var + bn.epsilon), 0.0)


def _bn_subset(bn, kept, name):
  """(a new BatchNormalization, its weights): `bn` restricted to the channels `kept`."""
  new = layers.BatchNormalization(epsilon=bn.epsilon, name=name)
  return new, (new, *(_np(v)[kept] for v in (bn.gamma, bn.beta, bn.moving_mean,
                                               bn.moving_variance)))


def _compact_vgg(net):
  n_blocks = len(net.blocks)
  sites = [_site(net, i, u) for i, u in enumerate(net.unit_counts)]
  x = inputs = keras.Input((32, 32, 3), name="images")
  if net.standardize:
    x = Standardize(name="standardize")(x)
  assignments = []
  prev_kept = np.arange(3)
  prev_const = None  # (constant per pruned channel, their indices) of the previous block
  size = 32
  for i, block in enumerate(net.blocks):
    kept, m = sites[i]
    w, b = _np(kernel_of(block["conv"])), _np(block["conv"].bias)
    conv = layers.Conv2D(len(kept), 3, padding="same", name=f"conv{i + 1}")
    assignments.append((conv, w[:, :, prev_kept][..., kept] * m, b[kept] * m))
    x = conv(x)
    if prev_const is not None and np.any(prev_const[0]):
      const, pruned = prev_const
      image = np.broadcast_to(const, (1, size, size, len(const))).astype(np.float32)
      bias_map = tf.nn.conv2d(image, w[:, :, pruned][..., kept], 1, "SAME").numpy()[0] * m
      add = AddMap(bias_map.shape, name=f"pruned_inputs{i + 1}")
      assignments.append((add, bias_map))
      x = add(x)
    bn = block["bn"]
    new_bn, weights = _bn_subset(bn, kept, f"bn{i + 1}")
    assignments.append(weights)
    x = layers.ReLU()(new_bn(x))
    if isinstance(block["after"], layers.MaxPooling2D):
      x = layers.MaxPooling2D(2, 2)(x)
      size //= 2
    pruned = np.setdiff1d(np.arange(net.unit_counts[i]), kept)
    prev_const = (_bn_constant(bn)[pruned], pruned)
    prev_kept = kept

  # Flattened features are the last block's channels (1x1 spatial). The fc1 mask keeps
  # some; those of pruned channels are constants that fold into the dense bias.
  x = layers.Flatten()(x)
  k_fc1, m_fc1 = sites[n_blocks]
  value_fc1 = dict(zip(k_fc1, m_fc1))
  pos = {c: j for j, c in enumerate(prev_kept)}
  gather, rows, scale = [], [], []
  for c in prev_kept:
    if c in value_fc1:
      gather.append(pos[c])
      rows.append(c)
      scale.append(value_fc1[c])
  k_fc2, m_fc2 = sites[n_blocks + 1]
  w1, b1 = _np(kernel_of(net.dense_fc1)), _np(net.dense_fc1.bias)
  const, pruned = prev_const
  fold = [(cv, c) for cv, c in zip(const, pruned) if c in value_fc1]
  for cv, c in fold:
    b1 = b1 + cv * value_fc1[c] * w1[c]
  x = GatherFeatures(gather, name=f"gather{n_blocks + 1}")(x)
  dense1 = layers.Dense(len(k_fc2), name=f"dense{n_blocks + 1}")
  assignments.append((dense1, (w1[rows] * np.asarray(scale)[:, None])[:, k_fc2], b1[k_fc2]))
  new_bn1, weights = _bn_subset(net.bn_fc1, k_fc2, f"bn{n_blocks + 1}")
  assignments.append(weights)
  x = layers.ReLU()(new_bn1(dense1(x)))
  w2, b2 = _np(kernel_of(net.dense_fc2)), _np(net.dense_fc2.bias)
  dense2 = layers.Dense(net.n_classes, name=f"dense{n_blocks + 2}")
  assignments.append((dense2, w2[k_fc2] * m_fc2[:, None], b2))
  model = keras.Model(inputs, dense2(x), name="vgg16_compact")
  for layer, *values in assignments:
    _set(layer, *values)
  return model


def compact_model(net):
  """A plain Keras model computing `net(x, training=False)` with the pruned units removed."""
  if isinstance(net, LeNet5):
    return _compact_lenet(net)
  return _compact_vgg(net)


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
    run_cfg.save(run_config_path(path))
  return path


def load_saved_model(path):
  """The loaded SavedModel (use `.signatures['serving_default'](images=...)`)."""
  return tf.saved_model.load(path)


# ----------------------------------------------------------------------------------------------
# --mode=prune / --mode=export.


PRUNING_JSON = "pruning.json"


def count_params(model):
  return int(sum(np.prod(w.shape) for w in model.weights))


def _weights_of(net):
  """Parameters of the masked net without the mask parameters."""
  mask_ids = {id(v) for v in net.mask_variables}
  return int(sum(np.prod(v.shape) for v in net.weights if id(v) not in mask_ids))


def pruning_report(net, compact, cfg, x_test):
  """The efficiency figures of pruning.json."""
  info = data.dataset_info(cfg.dataset)
  arch = architecture(cfg.dataset)
  n_active = net.n_active()
  masked_fn = lambda t: net(t, training=False)  # noqa: E731
  dense_flops = efficiency.forward_flops(masked_fn, info.image_shape)
  compact_flops = efficiency.forward_flops(lambda t: compact(t, training=False),
                                           info.image_shape)
  diff = float(np.max(np.abs(masked_fn(x_test).numpy() - compact(x_test).numpy())))
  return dict(
      dataset=cfg.dataset, method=cfg.method, threshold=cfg.thres,
      layers=[dict(site=i + 1, kept=k, total=t)
              for i, (k, t) in enumerate(zip(n_active, net.unit_counts))],
      n_active=n_active, n_units=list(net.unit_counts),
      params=dict(dense=_weights_of(net), compact=count_params(compact)),
      flops=dict(dense=int(dense_flops), compact=int(compact_flops),
                 ratio=dense_flops / max(compact_flops, 1)),
      paper=efficiency.paper_columns(arch, n_active, list(net.unit_counts), info.n_classes),
      max_abs_logit_diff=diff, checked_examples=int(len(x_test)),
      weight_pruning=hydra.weight_efficiency(net))


def format_report(report):
  lines = [f"{'site':>4}  {'kept':>5} / total"]
  lines += [f"{r['site']:>4}  {r['kept']:>5} / {r['total']}" for r in report["layers"]]
  p, f, paper = report["params"], report["flops"], report["paper"]
  lines += [f"parameters: {p['dense']:,} -> {p['compact']:,} ({p['compact'] / p['dense']:.2%})",
            f"FLOPs/image: {f['dense']:,} -> {f['compact']:,} (x{f['ratio']:.2f} fewer)",
            f"paper formulas: Memory {paper['memory_pct']:.2f}%  Flops x{paper['flops_ratio']:.2f}"
            f"  Sparsity {paper['sparsity_pct']:.2f}%",
            *([f"HYDRA weights kept: {w['weights_kept']:,} of {w['weights_total']:,} "
               f"(sparsity {w['sparsity']:.2%}; zeros kept in the dense shapes)"]
              if (w := report.get("weight_pruning")) else []),
            f"max |masked - compact| logits on {report['checked_examples']} test images: "
            f"{report['max_abs_logit_diff']:.2e}"]
  return "\n".join(lines)


def run_export(cfg, arrays=None):
  """--mode=prune (compact model) or --mode=export (the model as trained) to --export_dir."""
  if not cfg.export_dir:
    raise UserError(f"Flag --export_dir is required with --mode={cfg.mode}.")
  check_writable_dir(cfg.export_dir, "--export_dir")
  net, run_cfg = load_run(cfg.model_dir)
  if run_cfg.method == "at_bnn" and cfg.mode == "prune":
    raise UserError("Flag --mode=prune: an Adv-BNN run (--method=at_bnn) has no masks and "
                    "no pruned units; use --mode=export.")
  info = data.dataset_info(run_cfg.dataset)
  standardize = run_cfg.preprocess == "original" and architecture(run_cfg.dataset) == "vgg"
  serving_cfg = dataclasses.replace(run_cfg, preprocess="pixel")  # the export takes pixels
  os.makedirs(cfg.export_dir, exist_ok=True)
  if cfg.mode == "export":
    if run_cfg.method == "at_bnn":  # the stochastic net: an ensemble of fresh weight samples
      serving_cfg.bnn_ensemble = cfg.bnn_ensemble
      net = EnsembleLogits(net, cfg.bnn_ensemble)
      print(f"Adv-BNN: the SavedModel draws {cfg.bnn_ensemble} weight samples per call and "
            "serves their mean softmax (logits = its log); every call is random.")
    path = save_for_serving(inference_model(net, info.image_shape), cfg.export_dir,
                            info.image_shape, standardize, serving_cfg)
    print(f"SavedModel written to {path}")
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
    with open(os.path.join(folder, PRUNING_JSON), "w") as f:
      json.dump(report, f, indent=2)
  print(format_report(report))
  print(f"SavedModel written to {path}")
  return report


def inference_model(net, image_shape):
  """A Keras model running the masked `net` in inference mode (masks at E[pi])."""
  return keras.Sequential([keras.Input(image_shape), InferenceOnly(net)])


class InferenceOnly(layers.Layer):
  """Wraps a masked net so that it always runs in inference mode (masks at E[pi])."""

  def __init__(self, net, **kwargs):
    super().__init__(**kwargs)
    self.net = net

  def call(self, x):
    return self.net(x, training=False)

