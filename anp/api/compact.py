"""`compact`: a masked Keras model without its pruned units, as a plain Keras model.

Every tensor of the masked graph (`anp.api.graph`) keeps, in the compact model, the units that
are *live* (they vary with the input: not pruned by a mask, not computed from pruned units
alone) and *needed* (some later layer reads them). Conv2D / Dense kernels are sliced on both
axes, BatchNormalization keeps its statistics of the kept units, Flatten's features are the
kept (position, unit) pairs gathered in order (p * C + c), and a mask's values E[pi] fold into
the Conv2D / Dense / BatchNormalization before it (or a `Scale` layer where they cannot).

A pruned unit is a constant map whatever the input (0 after its mask, maybe a constant after a
BatchNormalization or a non-zero activation that follows). The constant maps are read from one
pass of the masked model on a zero image; what a Conv2D / Dense layer makes of them folds into
its bias, or into a per-position map (`anp.deploy.compact.AddMap`) where zero padding makes it
vary with the position. The compact logits equal the masked model's inference logits up to
float rounding.
"""

import keras
import numpy as np
import tensorflow as tf

from anp.api.graph import JOIN, LINEAR, functional
from anp.api.masked import MaskedModel
from anp.deploy.compact import AddMap, GatherFeatures, compact_model
from anp.errors import UnsupportedLayerError

layers = keras.layers
# Activations a positive per-unit scale commutes with: act(m z) = m act(z) for m > 0.
HOMOGENEOUS = ("linear", "relu")


@keras.saving.register_keras_serializable(package="anp")
class Scale(layers.Layer):
  """Multiplies the last axis by constant factors (kept mask values): [..., U] -> [..., U]."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    self.factors = self.add_weight(name="factors", shape=(self.units,), initializer="ones",
                                   trainable=False)

  def call(self, x):
    return x * tf.cast(self.factors, x.dtype)

  def get_config(self):
    return {**super().get_config(), "units": self.units}


def _activation(layer):
  return getattr(getattr(layer, "activation", None), "__name__", "linear")


def _homogeneous(layer):
  """Whether `layer` is an activation layer with act(m z) = m act(z) for m > 0."""
  if isinstance(layer, layers.ReLU):
    return layer.max_value is None and not layer.threshold
  return isinstance(layer, layers.Activation) and _activation(layer) in HOMOGENEOUS


def _liveness(graph, keep):
  """({tensor: live [U] bool}, {tensor: needed [U] bool}) after the masks (see module doc)."""
  live = {graph.input: np.ones(graph.units(graph.input), bool)}
  for s in graph.steps:
    ins = [live[t] for t in s.inputs]
    if isinstance(s.layer, LINEAR):
      out = np.ones(s.shape[-1], bool)
    elif isinstance(s.layer, layers.Flatten):
      out = np.tile(ins[0], int(np.prod(s.input_shapes[0][1:-1], dtype=np.int64)))
    elif isinstance(s.layer, JOIN):
      out = np.logical_or.reduce(ins)
    elif isinstance(s.layer, layers.Concatenate):
      out = np.concatenate(ins)
    else:
      out = ins[0]
    live[s.output] = out & keep.get(s.output, True)
  need = {t: np.zeros_like(v) for t, v in live.items()}
  need[graph.output][:] = True
  for s in reversed(graph.steps):
    out = need[s.output] & keep.get(s.output, True)
    for i, t in enumerate(s.inputs):
      if isinstance(s.layer, LINEAR):
        need[t] |= live[t]
      elif isinstance(s.layer, layers.Flatten):
        need[t] |= out.reshape(-1, len(need[t])).any(axis=0)
      elif isinstance(s.layer, layers.Concatenate):
        start = sum(len(need[u]) for u in s.inputs[:i])
        need[t] |= out[start:start + len(need[t])]
      else:
        need[t] |= out
  return live, need


class _Builder:
  """Builds the compact graph step by step; `weights` are set once the graph is complete."""

  def __init__(self, masked):
    self.graph = graph = masked.graph.value
    self.keep, self.factors = {}, {}
    for mask, (_, sites) in zip(masked.masks, graph.groups):
      m = mask.inference_mask().numpy()
      for t in sites:
        self.keep[t], self.factors[t] = m > 0, m
    self.live, self.need = _liveness(graph, self.keep)
    _, _, values = masked.run(tf.zeros((1,) + tuple(graph.input_shape)), training=False)
    self.values = {t: np.asarray(v) for t, v in values.items()}
    self.kept = {t: np.flatnonzero(self.live[t] & self.need[t]) for t in self.live}
    self.weights = {}  # new layer -> list of arrays
    self.input_factors = {}  # tensor id -> mask values its one Conv2D / Dense reader absorbs
    self.pruned_inputs = {}  # new Conv2D / Dense -> (its AddMap, its activation)
    self.made = {}  # tensor id -> (compact KerasTensor, original unit indices it holds)
    self.gathers = 0

  def adapt(self, t, want, layer):
    """The compact tensor of `t` holding exactly the units `want` (gathered if need be)."""
    x, idx = self.made[t]
    if len(idx) == len(want) and np.array_equal(idx, want):
      return x
    where = {u: j for j, u in enumerate(idx)}
    if any(u not in where for u in want):
      raise UnsupportedLayerError(
          f"Layer {layer.name!r} ({type(layer).__name__}): its inputs are pruned differently "
          "(a unit pruned in one input is live in another), which compaction cannot remove.")
    self.gathers += 1
    return GatherFeatures([where[u] for u in want],
                          name=f"{layer.name}_gather{self.gathers}")(x)

  def clone(self, layer, **changes):
    return type(layer).from_config({**layer.get_config(), **changes})

  def linear(self, s, x):
    layer, t_in = s.layer, s.inputs[0]
    k_in, k_out = self.kept[t_in], self.kept[s.output]
    kernel = layer.kernel.numpy()
    if t_in in self.input_factors:
      kernel = kernel.copy()
      kernel[..., k_in, :] *= self.input_factors[t_in][:, None]
    bias = layer.bias.numpy()[k_out] if layer.use_bias else np.zeros(len(k_out), np.float32)
    dead = np.flatnonzero(~self.live[t_in])
    extra, use_bias = None, layer.use_bias
    if dead.size:
      v = self.values[t_in][..., dead]
      w = kernel[..., dead, :][..., k_out]
      if isinstance(layer, layers.Conv2D):
        extra = tf.nn.convolution(v, w, strides=layer.strides, padding=layer.padding.upper(),
                                  dilations=layer.dilation_rate).numpy()[0]
      else:
        extra = (v @ w)[0]
      flat = extra.reshape(-1, len(k_out))
      if not np.any(flat):
        extra = None
      elif np.all(flat == flat[:1]):
        bias, extra = bias + flat[0], None
        use_bias = True
    width = dict(filters=len(k_out)) if isinstance(layer, layers.Conv2D) else dict(
        units=len(k_out))
    act = _activation(layer)
    new = self.clone(layer, **width, use_bias=use_bias,
                     activation="linear" if extra is not None else act)
    y = new(x)
    self.weights[new] = [kernel[..., k_in, :][..., k_out]] + ([bias] if use_bias else [])
    if extra is not None:
      add = AddMap(extra.shape, name=f"{layer.name}_pruned_inputs")
      y = layers.Activation(act, name=f"{layer.name}_activation")(add(y))
      self.weights[add] = [extra]
      self.pruned_inputs[new] = (add, act)
    return y, new

  def step(self, s):
    layer = s.layer
    if isinstance(layer, LINEAR):
      y, new = self.linear(s, self.adapt(s.inputs[0], self.kept[s.inputs[0]], layer))
      return y, self.kept[s.output], new
    if isinstance(layer, (JOIN, layers.Concatenate)):
      if isinstance(layer, JOIN):
        xs = [self.adapt(t, self.kept[s.output], layer) for t in s.inputs]
        idx, offset = self.kept[s.output], 0
      else:
        xs, idx, offset = [], [], 0
        for t in s.inputs:
          x, i = self.made[t]
          xs.append(x), idx.append(i + offset)
          offset += len(self.live[t])
        idx = np.concatenate(idx)
      new = self.clone(layer)
      return new(xs), idx, new
    x, idx = self.made[s.inputs[0]]
    new = self.clone(layer)
    if isinstance(layer, layers.BatchNormalization):
      self.weights[new] = [w[idx] for w in layer.get_weights()]
    y = new(x)
    if isinstance(layer, layers.Flatten):
      units = s.input_shapes[0][-1]
      positions = int(np.prod(s.input_shapes[0][1:-1], dtype=np.int64))
      idx = (np.arange(positions)[:, None] * units + idx[None]).reshape(-1)
    return y, idx, new

  def scale(self, s, y, new):
    """Folds a site's kept mask values into the layer that made it, or adds a Scale layer."""
    f = self.factors[s.output][self.kept[s.output]]
    target = new
    if _homogeneous(new):
      producer = next((p for p in self.graph.steps if p.output == s.inputs[0]), None)
      if (producer is not None and len(self.graph.consumers[producer.output]) == 1
          and np.array_equal(self.kept[producer.output], self.kept[s.output])):
        target = self.created.get(id(producer.layer))
    add, act = self.pruned_inputs.get(target, (None, _activation(target)))
    if isinstance(target, LINEAR) and act in HOMOGENEOUS:
      self.weights[target] = [w * f for w in self.weights[target]]
      if add is not None:
        self.weights[add] = [self.weights[add][0] * f]
      return y
    if isinstance(target, layers.BatchNormalization) and target.center and target.scale:
      gamma, beta, *stats = self.weights[target]
      self.weights[target] = [gamma * f, beta * f, *stats]
      return y
    readers = self.graph.consumers.get(s.output, ())
    if len(readers) == 1 and isinstance(readers[0].layer, LINEAR):  # into its input rows
      self.input_factors[s.output] = f
      return y
    scale = Scale(len(f), name=f"{s.layer.name}_mask")
    self.weights[scale] = [f]
    return scale(y)

  def build(self, name):
    inputs = keras.Input(self.graph.input_shape, name="images")
    self.made[self.graph.input] = (inputs, np.arange(self.graph.units(self.graph.input)))
    self.created = {}
    for s in self.graph.steps:
      y, idx, new = self.step(s)
      self.created[id(s.layer)] = new
      want = self.kept[s.output]
      self.made[s.output] = (y, idx)
      y = self.adapt(s.output, want, s.layer)
      if s.output in self.factors:
        y = self.scale(s, y, new)
      self.made[s.output] = (y, want)
    out = self.adapt(self.graph.output, np.arange(self.graph.units(self.graph.output)),
                     self.graph.steps[-1].layer)
    model = keras.Model(inputs, out, name=name)
    for layer, values in self.weights.items():
      layer.set_weights([np.asarray(v, np.float32) for v in values])
    return model


def compact(masked):
  """A plain Keras model computing `masked(x, training=False)` without its pruned units.

  `masked`: a `MaskedModel` (`anp.add_masks`), or the CLI's LeNet5 / VGG-16
  (`anp.deploy.compact.compact_model`). Layers keep their names; the result holds no mask
  layers and can be saved, exported (`anp.api.export`) or trained further like any model.
  """
  if not isinstance(masked, MaskedModel):  # the CLI's LeNet5 / VGG-16: their own compaction
    return compact_model(masked)
  functional(masked.base)
  return _Builder(masked).build(f"{masked.base.name}_compact")
