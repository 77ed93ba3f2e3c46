"""`add_masks`: beta-Bernoulli masks on the units of a user's Keras model (`MaskedModel`)."""

import keras
import tensorflow as tf

from anp.api.graph import Graph
from models.base import MaskedNet
from models.masks import BetaBernoulli


def _times(x, z):
  """x [B, ..., U] times a mask z: [U] (inference) or [B, U] (one per example)."""
  z = tf.cast(z, x.dtype)
  if z.shape.rank == 2 and x.shape.rank > 2:
    z = tf.reshape(z, tf.concat([tf.shape(z)[:1], tf.ones([x.shape.rank - 2], tf.int32),
                                 tf.shape(z)[1:]], 0))
  return x * z


class MaskedModel(MaskedNet):
  """A Keras model whose units carry beta-Bernoulli masks (Madaan et al. 2020, Sec. 3.1).

  Runs the layers of `model` (the same layer objects and weights) and multiplies every mask
  site (`anp.api.graph`) by its mask z in [0, 1]^U: in training
  z ~ RelaxedBernoulli(logit(pi)) per example with pi ~ Kumaraswamy(a, b) per unit; at
  inference z = E[pi], 0 where E[pi] <= threshold (a pruned unit). Sites joined by Add share
  one mask (one draw per call).

  It is a `models.base.MaskedNet`, the interface of LeNet5 and VGG-16 that the trainer
  (`anp.training.model.AdversarialTrainer`), the evaluation and the attacks use:
  `call(x, training, return_features, seed, activation_hook)` gives logits [B, n_classes] and,
  with `return_features`, the site outputs (the latent features whose distortion is the
  vulnerability); `masks`, `unit_counts`, `mask_variables`, `weight_variables`, `kl()`,
  `n_active()`, `sparsity()` and `attack_fn()` are MaskedNet's. With `seed` (shape-[2] ints)
  the masks and dropout of a training call are a pure function of the seed.

  Args:
    model: a built Sequential or functional Keras model, images -> logits.
    masked: False gives the same interface without masks (unmasked methods: standard, at,
      trades).
    threshold: E[pi] at or below which a unit is pruned.
    a_init: initial raw a of every mask (a = softplus(a_init); -1.0 as LeNet5's masks).
    mask_flatten: also mask the flattened features that feed a Dense layer.
  """

  def __init__(self, model, masked=True, threshold=1e-3, a_init=-1.0, mask_flatten=True,
               **kwargs):
    kwargs.setdefault("name", f"{model.name}_masked")
    super().__init__(masked=masked, threshold=threshold, **kwargs)
    self.base = model
    self.graph = _Frozen(Graph(model, mask_flatten))
    self.a_init = float(a_init)
    self.masks = []
    groups = self.graph.value.groups if masked else []
    for i, (units, _) in enumerate(groups):
      mask = self._mask(a_init, f"mask{i + 1}")
      mask.build((None, units))
    self.unit_counts = tuple(units for units, _ in groups)
    self.graph.dropouts = {id(s.layer): i for i, s in enumerate(
        s for s in self.graph.value.steps if type(s.layer) is keras.layers.Dropout)}
    self.built = True

  @property
  def image_shape(self):
    """The image shape [H, W, C] of the model's input."""
    return self.graph.value.input_shape

  def _mask_values(self, batch, training, seed):
    if training:
      return [m.sample_mask(batch, self._site_seed(seed, i)) for i, m in enumerate(self.masks)]
    return [m.inference_mask() for m in self.masks]

  def _layer_call(self, step, args, kwargs, training, seed):
    layer = step.layer
    dropout = self.graph.dropouts.get(id(layer))
    if training and seed is not None and dropout is not None and layer.noise_shape is None:
      site = self._site_seed(seed, len(self.masks) + dropout)
      return tf.nn.experimental.stateless_dropout(args[0], layer.rate, site)
    return layer(*args, **{"training": training, **kwargs})

  def run(self, x, training=False, seed=None, activation_hook=None):
    """(logits, features, {tensor id: value}) of one pass through the masked graph."""
    graph = self.graph.value
    hook = activation_hook or (lambda h: h)
    values = {graph.input: x}
    z = self._mask_values(tf.shape(x)[0], training, seed) if self.masks else []
    features = []
    for step in graph.steps:
      args, kwargs = step.node.arguments.fill_in(values)
      out = self._layer_call(step, args, kwargs, training, seed)
      if step.output in graph.sites:
        group = graph.sites[step.output]
        if group is not None and z:
          out = _times(out, z[group])
        out = hook(out)
        features.append(out)
      values[step.output] = out
    return values[graph.output], features, values

  def call(self, x, training=False, return_features=False, seed=None, activation_hook=None):
    logits, features, _ = self.run(x, training, seed, activation_hook)
    return (logits, features) if return_features else logits

  def mask_sites(self):
    """[(mask name, units, [names of the layers whose outputs it multiplies])]."""
    graph = self.graph.value
    names = {s.output: s.layer.name for s in graph.steps}
    return [(m.name, units, [names[t] for t in sites])
            for m, (units, sites) in zip(self.masks, graph.groups)]

  def get_config(self):
    raise NotImplementedError("A MaskedModel is saved by its weights (save_weights) or "
                              "exported compact (anp.compact, then export).")


class _Frozen:
  """Holds a plain Python object out of Keras' attribute tracking."""

  def __init__(self, value):
    self.value = value


def add_masks(model, threshold=1e-3, a_init=-1.0, mask_flatten=True, masked=True):
  """A `MaskedModel` of `model`: a beta-Bernoulli mask on the units of every conv / dense layer.

  The masked model shares `model`'s layers and weights (training it trains them). Raises
  `anp.errors.UnsupportedLayerError` for a layer it cannot mask or compact.
  """
  if isinstance(model, MaskedNet):
    raise TypeError(f"Expected a plain Keras model. Received the masked {model.name!r}.")
  return MaskedModel(model, masked=masked, threshold=threshold, a_init=a_init,
                     mask_flatten=mask_flatten)
