"""Compact pruned models: `compact_model(net)`, the masked network without its pruned units.

`compact_model(net)` is a pure function (the trained network is never edited): it returns a
plain Keras model without mask layers in which every unit or channel whose E[pi] is at or
below the threshold is physically removed and the surviving mask values E[pi] are folded
into the weights. Its logits equal the masked network's inference logits. HYDRA's networks
(`anp.methods.hydra`) go the same way: a channel-pruned one (`TopKMask` sites) loses its
pruned units like a masked one; a weight-pruned one loses the units pruning disconnected
(`anp.deploy.disconnected`) and stores its sparse kernels as their non-zero entries
(`anp.deploy.sparse.SparseKernel`).

VGG: the mask acts before batch norm, so a pruned channel is not zero after BN + ReLU but
the constant relu(beta - gamma * mean / sqrt(var + eps)), which the next layer still sees.
The compact model folds it exactly: into a per-position bias map of the next conv (zero
padding makes the borders differ from the interior) or into the bias of the next dense
layer. The original code counts such channels as removed without accounting for this.
"""

import keras
import numpy as np
import tensorflow as tf

from anp.deploy.disconnected import drop_disconnected_lenet, vgg_disconnected
from anp.deploy.sparse import SparseKernel, sparse_weights
from models.lenet import LeNet5
from models.subnet import kernel_of, subnet_layers

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
  layer.set_weights([np.asarray(v, w.dtype) for v, w in zip(values, layer.weights)])


def _layer(kernel, bias, name, sparse, activation=None, padding="valid"):
  """(a Conv2D for a 4-D kernel, else a Dense; their `SparseKernel` when `sparse`, the layer
  first then its weights) computing `kernel` and `bias`."""
  if sparse and np.count_nonzero(kernel) < kernel.size / 4:  # at most half the dense bytes
    weights = sparse_weights(kernel, bias)
    return (SparseKernel(kernel.shape, len(weights[0]), padding, activation, name=name),
            *weights)
  if kernel.ndim == 4:
    layer = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], padding=padding,
                          activation=activation, name=name)
  else:
    layer = layers.Dense(kernel.shape[-1], activation=activation, name=name)
  return layer, kernel, bias


def _compact_lenet(net, weight_pruned, sparse):
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
  features, rows, scale = [], [], []
  value3 = dict(zip(k3, m3))
  for index in range(800):
    hw, c = divmod(index, 50)
    if c in pos_of_channel and index in value3:
      features.append((hw, pos_of_channel[c]))
      rows.append(index)
      scale.append(value3[index])
  weights = (w1[..., k1] * m1, b1[k1] * m1, w2[:, :, k1][..., k2] * m2, b2[k2] * m2,
             np.asarray(features, np.int64).reshape(-1, 2),
             (w3[rows] * np.asarray(scale)[:, None])[:, k4], b3[k4], w4[k4] * m4[:, None], b4)
  if weight_pruned:  # units without inputs or outputs go too
    weights = drop_disconnected_lenet(*weights)
  w1, b1, w2, b2, features, w3, b3, w4, b4 = weights
  survivors = features[:, 0] * w2.shape[-1] + features[:, 1]

  conv1, *a1 = _layer(w1, b1, "conv1", sparse, "relu")
  conv2, *a2 = _layer(w2, b2, "conv2", sparse, "relu")
  dense3, *a3 = _layer(w3, b3, "dense3", sparse, "relu")
  dense4, *a4 = _layer(w4, b4, "dense4", sparse)
  x = inputs = keras.Input((28, 28, 1), name="images")
  x = layers.MaxPooling2D(2, 2)(conv1(x))
  x = layers.Flatten()(layers.MaxPooling2D(2, 2)(conv2(x)))
  x = GatherFeatures(survivors, name="gather3")(x)
  model = keras.Model(inputs, dense4(dense3(x)), name="lenet5_compact")
  for layer, values in ((conv1, a1), (conv2, a2), (dense3, a3), (dense4, a4)):
    _set(layer, *values)
  return model


def _bn_constant(bn, pre=0.0):
  """relu(BN(pre)) per channel: what a pruned channel (pre-BN value `pre`, 0 when a mask
  pruned it) becomes after BN + ReLU."""
  gamma, beta = _np(bn.gamma), _np(bn.beta)
  mean, var = _np(bn.moving_mean), _np(bn.moving_variance)
  return np.maximum(beta + gamma * (pre - mean) / np.sqrt(var + bn.epsilon), 0.0)


def _bn_subset(bn, kept, name):
  """(a new BatchNormalization, its weights): `bn` restricted to the channels `kept`."""
  new = layers.BatchNormalization(epsilon=bn.epsilon, name=name)
  return new, (new, *(_np(v)[kept] for v in (bn.gamma, bn.beta, bn.moving_mean,
                                               bn.moving_variance)))


def _compact_vgg(net, weight_pruned, sparse):
  n_blocks = len(net.blocks)
  sites = [_site(net, i, u) for i, u in enumerate(net.unit_counts)]
  x = inputs = keras.Input((32, 32, 3), name="images")
  if net.standardize:
    x = Standardize(name="standardize")(x)
  assignments = []
  prev_kept = np.arange(3)
  prev_const = None  # (constant per pruned channel, their indices) of the previous block
  size = 32
  # Weight pruning: channels and units left without weights go too (`vgg_disconnected`).
  kernels = [_np(kernel_of(layer)) for layer in
             [block["conv"] for block in net.blocks] + [net.dense_fc1, net.dense_fc2]]
  for i, block in enumerate(net.blocks):
    kept, m = sites[i]
    w, b = kernels[i], _np(block["conv"].bias)
    pre = 0.0
    if weight_pruned:
      keep, pre = vgg_disconnected(kept, w, b, kernels[i + 1])
      kept, m = kept[keep], m[keep]
    conv, *weights = _layer(w[:, :, prev_kept][..., kept] * m, b[kept] * m, f"conv{i + 1}",
                            sparse, padding="same")
    assignments.append((conv, *weights))
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
    prev_const = (_bn_constant(bn, pre)[pruned], pruned)
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
  w1, b1 = kernels[n_blocks], _np(net.dense_fc1.bias)
  w2, b2 = kernels[n_blocks + 1], _np(net.dense_fc2.bias)
  const, pruned = prev_const
  fold = [(cv, c) for cv, c in zip(const, pruned) if c in value_fc1]
  for cv, c in fold:
    b1 = b1 + cv * value_fc1[c] * w1[c]
  if weight_pruned:  # fc1 units without inputs: relu(BN(bias)) into fc2's bias
    keep, pre = vgg_disconnected(k_fc2, w1, b1, w2)
    gone = k_fc2[~keep]
    b2 = b2 + (_bn_constant(net.bn_fc1, pre)[gone] * m_fc2[~keep]) @ w2[gone]
    k_fc2, m_fc2 = k_fc2[keep], m_fc2[keep]
  x = GatherFeatures(gather, name=f"gather{n_blocks + 1}")(x)
  dense1, *weights = _layer((w1[rows] * np.asarray(scale)[:, None])[:, k_fc2], b1[k_fc2],
                            f"dense{n_blocks + 1}", sparse)
  assignments.append((dense1, *weights))
  new_bn1, weights = _bn_subset(net.bn_fc1, k_fc2, f"bn{n_blocks + 1}")
  assignments.append(weights)
  x = layers.ReLU()(new_bn1(dense1(x)))
  dense2, *weights = _layer(w2[k_fc2] * m_fc2[:, None], b2, f"dense{n_blocks + 2}", sparse)
  assignments.append((dense2, *weights))
  model = keras.Model(inputs, dense2(x), name="vgg16_compact")
  for layer, *values in assignments:
    _set(layer, *values)
  return model


def compact_model(net, sparse=None):
  """A plain Keras model computing `net(x, training=False)` with the pruned units removed.

  `sparse`: store each kernel with under a quarter of its entries non-zero as those entries
  (`SparseKernel`: at most half the bytes); by default, when `net` is weight-pruned (HYDRA's
  unstructured layers). A weight-pruned net also loses the units that pruning disconnected
  (`anp.deploy.disconnected`).
  """
  weight_pruned = bool(subnet_layers(net))
  sparse = weight_pruned if sparse is None else sparse
  if isinstance(net, LeNet5):
    return _compact_lenet(net, weight_pruned, sparse)
  return _compact_vgg(net, weight_pruned, sparse)


def served_units(model):
  """The units a compact model keeps per mask site (`unit_counts`' order): each convolution's
  filters, the dense inputs gathered, each hidden dense layer's units."""
  units = []
  for layer in model.layers:
    if isinstance(layer, GatherFeatures):
      units.append(len(layer.indices))
    elif isinstance(layer, SparseKernel):
      units.append(layer.kernel_shape[-1])
    elif isinstance(layer, (layers.Conv2D, layers.Dense)):
      units.append(int(layer.kernel.shape[-1]))
  return units[:-1]  # not the logits


def connected_units(net):
  """The units per mask site that a weight-pruned `net` still uses: those its compact model
  serves (a unit left without weights in or out is folded into a constant and removed)."""
  return served_units(compact_model(net, sparse=False))
