"""The layer graph of a user's Keras model, as `anp.api` masks, runs and compacts it.

A model is a Sequential or functional Keras 3 model with one image input and one logits output,
built from the layers of SUPPORTED. `Graph(model)` lists its nodes in an order in which every
node comes after its inputs (`steps`) and decides where the masks go:

* a mask *site* is the end of every Conv2D / Dense layer's unit block: the layer followed by the
  chain of BatchNormalization and activation layers that only it feeds (so the masked tensor is
  exactly 0 on a pruned unit whatever the activation); the layer that gives the logits carries
  none. With `mask_flatten`, the output of a Flatten read directly by a Dense layer is a site, as
  the flattened inputs of LeNet5's and VGG-16's first dense layer (`models.lenet`, `models.vgg`).
* every tensor has a *channel space* (its last axis); Add / Subtract / Average join the spaces of
  their inputs, so that the sites of one joined space share one mask and a pruned unit is
  pruned in every summand; a space joined with the model's input or with a Concatenate's output
  gets no mask (those channels cannot all be removed). Concatenate keeps one space per branch.

Anything else is refused by `UnsupportedLayerError`, one line naming the layer and why.
The graph is read from Keras 3's functional model (`_nodes_by_depth`, each node's operation,
input and output KerasTensors and `arguments`; a Sequential model's `_functional`), the
structure `keras.Model` itself runs.
"""

import keras

from anp.errors import UnsupportedLayerError

layers = keras.layers

LINEAR = (layers.Conv2D, layers.Dense)
POINTWISE = (layers.BatchNormalization, layers.Activation, layers.ReLU, layers.LeakyReLU,
             layers.ELU)
PER_CHANNEL = (layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalAveragePooling2D,
               layers.GlobalMaxPooling2D, layers.Dropout, layers.Identity)
JOIN = (layers.Add, layers.Subtract, layers.Average)
SUPPORTED = LINEAR + POINTWISE + PER_CHANNEL + JOIN + (layers.Flatten, layers.Concatenate)
ACROSS_UNITS = ("softmax", "log_softmax")


def _refuse(layer, why):
  raise UnsupportedLayerError(f"Layer {layer.name!r} ({type(layer).__name__}): {why}")


def functional(model):
  """The functional form of a built Sequential or functional model (its own layers)."""
  if isinstance(model, keras.Sequential):
    inner = getattr(model, "_functional", None)
    if inner is None:
      raise UnsupportedLayerError(
          f"Model {model.name!r} (Sequential): not built; start it with keras.Input(shape).")
    return inner
  if not hasattr(model, "_nodes_by_depth"):
    raise UnsupportedLayerError(
        f"Model {model.name!r} ({type(model).__name__}): expected a Sequential or functional "
        "Keras model (a subclassed model's graph cannot be read).")
  return model


def _check_layer(layer, n_inputs, rank):
  """Refuses a layer that the masks or the compaction cannot handle."""
  if isinstance(layer, keras.Model):
    _refuse(layer, "a nested model; build the network from its layers in one model.")
  if not isinstance(layer, SUPPORTED):
    _refuse(layer, "not supported; expected Conv2D, Dense, BatchNormalization, pooling, "
            "Flatten, Dropout, activations, Add / Subtract / Average or Concatenate.")
  if getattr(layer, "data_format", "channels_last") != "channels_last":
    _refuse(layer, "data_format must be channels_last (units on the last axis).")
  if isinstance(layer, layers.Conv2D) and (layer.groups != 1 or type(layer) is not layers.Conv2D):
    _refuse(layer, "only plain Conv2D (groups=1) is supported.")
  if isinstance(layer, layers.BatchNormalization) and layer.axis % rank != rank - 1:
    _refuse(layer, "BatchNormalization must normalise the last axis.")
  if isinstance(layer, layers.Concatenate) and layer.axis != -1:
    _refuse(layer, "Concatenate must join the last axis (axis=-1).")
  activation = getattr(layer, "activation", None)
  if getattr(activation, "__name__", "") in ACROSS_UNITS:
    _refuse(layer, f"activation {activation.__name__} mixes units; the model must output "
            "logits (drop the softmax).")
  if isinstance(layer, JOIN + (layers.Concatenate,)) != (n_inputs > 1):
    _refuse(layer, "expected one input tensor (two or more for Add / Average / Concatenate).")


class Step:
  """One node: `layer` applied to the tensors `inputs` (ids), giving tensor `output` (id)."""

  def __init__(self, node):
    self.node = node
    self.layer = node.operation
    self.inputs = [id(t) for t in node.input_tensors]
    if len(node.outputs) != 1:
      _refuse(self.layer, "expected one output tensor.")
    self.output = id(node.outputs[0])
    self.shape = tuple(node.outputs[0].shape)
    self.input_shapes = [tuple(t.shape) for t in node.input_tensors]


class Graph:
  """The steps, mask sites and mask groups of a model (see the module docstring).

  Attributes:
    steps: [Step] in execution order.
    input, output: ids of the model's input and logits tensors.
    sites: {tensor id: group index or None (no mask)} in execution order.
    groups: [(units, [site tensor ids])], one per mask, in order of their first site.
    consumers: {tensor id: [Step]}.
  """

  def __init__(self, model, mask_flatten=True):
    model = functional(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
      raise UnsupportedLayerError(f"Model {model.name!r}: expected one input and one output "
                                  f"tensor, got {len(model.inputs)} and {len(model.outputs)}.")
    self.model = model
    self.input, self.output = id(model.inputs[0]), id(model.outputs[0])
    self.input_shape = tuple(model.inputs[0].shape[1:])
    self.steps, seen = [], set()
    for depth in sorted(model._nodes_by_depth, reverse=True):
      for node in model._nodes_by_depth[depth]:
        if node.is_input:
          continue
        step = Step(node)
        _check_layer(step.layer, len(step.inputs), len(step.input_shapes[0]))
        if id(step.layer) in seen:
          _refuse(step.layer, "called more than once (shared layers are not supported).")
        seen.add(id(step.layer))
        self.steps.append(step)
    self.consumers = {}
    for step in self.steps:
      for t in step.inputs:
        self.consumers.setdefault(t, []).append(step)
    self._find_sites(mask_flatten)
    self._group_sites()

  def _chain_end(self, step):
    """The last tensor of a Conv2D / Dense layer's unit block (see the module docstring)."""
    t = step.output
    while t != self.output and len(self.consumers.get(t, ())) == 1:
      nxt = self.consumers[t][0]
      if not isinstance(nxt.layer, POINTWISE):
        break
      t = nxt.output
    return t

  def _find_sites(self, mask_flatten):
    self.site_list = []
    for step in self.steps:
      if isinstance(step.layer, LINEAR):
        end = self._chain_end(step)
      elif (mask_flatten and isinstance(step.layer, layers.Flatten)
            and any(isinstance(c.layer, layers.Dense) for c in self.consumers.get(
                step.output, ()))):
        end = step.output
      else:
        continue
      if end != self.output:
        self.site_list.append(end)

  def _group_sites(self):
    parent = {}

    def find(s):
      while parent[s] != s:
        parent[s] = parent[parent[s]]
        s = parent[s]
      return s

    space, blocked = {self.input: self.input}, {self.input}
    parent[self.input] = self.input
    for step in self.steps:
      layer, out = step.layer, step.output
      if isinstance(layer, POINTWISE + PER_CHANNEL):
        space[out] = space[step.inputs[0]]
        continue
      parent[out] = space[out] = out
      if isinstance(layer, layers.Concatenate):
        blocked.add(out)
      elif isinstance(layer, JOIN):
        for t in step.inputs:
          parent[find(space[t])] = out
    blocked = {find(s) for s in blocked}
    self.sites, self.groups, index = {}, [], {}
    for t in self.site_list:
      root = find(space[t])
      if root in blocked:
        self.sites[t] = None
        continue
      if root not in index:
        index[root] = len(self.groups)
        self.groups.append((self.units(t), []))
      self.sites[t] = index[root]
      self.groups[index[root]][1].append(t)

  def units(self, tensor):
    """Size of the last axis of a tensor (by id)."""
    if tensor == self.input:
      return int(self.input_shape[-1])
    return int(next(s.shape[-1] for s in self.steps if s.output == tensor))
