"""Every layer of a Keras network, through Keras' public API only."""

import collections

import keras


def sublayers(layer):
  """The layers nested in `layer` (not itself), each once, in Keras' own flattening order.

  Keras 3 lists a model's direct children publicly (`keras.Model.layers`, creation order; a
  Sequential's input layer is not one of them); the walk recurses into every child model. The
  order is that of Keras' `Layer._flatten_layers(include_self=False)`, which checkpointed state
  depends on (`anp.methods.admm.kernels`): a child's own layers come right after it, last-created
  first. A plain (non-model) layer's sub-layers are not public; the networks here have none.
  [] for anything that is not a Keras model (e.g. a loaded SavedModel).
  """
  found, seen = [], set()
  queue = collections.deque(_children(layer))
  while queue:
    child = queue.popleft()
    if id(child) in seen:
      continue
    seen.add(id(child))
    found.append(child)
    queue.extendleft(_children(child))
  return found


def _children(layer):
  return list(layer.layers) if isinstance(layer, keras.Model) else []
