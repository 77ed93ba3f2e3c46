"""HYDRA's pruning masks: per-layer top-k of importance scores with a straight-through gradient.

HYDRA (Sehwag, Wang, Mittal & Jana, "HYDRA: Pruning Adversarially Robust Neural Networks",
NeurIPS 2020) keeps the pretrained weights fixed and learns one importance score per weight;
the forward pass uses `w * 1[|s| among the top k of its layer]` and the gradient of the 0/1
mask is passed to |s| unchanged (straight-through, as in Ramanujan et al. 2020's
edge-popup). Two granularities here:

* `SubnetConv2D` / `SubnetDense` (unstructured, HYDRA's own): a score per kernel entry, shape
  of the kernel; the top-k is taken over each layer's kernel.
* `TopKMask` (structured): a score per unit of a mask site (a conv channel or a dense input,
  the sites of the beta-Bernoulli masks), multiplying the site's activations by 0/1, so that
  `anp.deploy.compact.compact_model` removes the pruned units physically.

Convention: `prune_ratio` is the fraction of entries *removed* per layer; HYDRA's own `k` is the
fraction kept (k = 1 - prune_ratio). A layer of n entries keeps n - floor(prune_ratio * n),
HYDRA's `n - int((1 - k) n)`: at least one entry, exactly that many (of equal scores, the
lower indices are kept, as by `tf.math.top_k`).
"""

import contextlib
import math

import keras
import tensorflow as tf

from models.walk import sublayers

layers = keras.layers


def n_kept(n, prune_ratio):
  """Entries kept of a layer of `n` under `prune_ratio` (fraction removed), >= 1."""
  if not 0.0 <= prune_ratio < 1.0:
    raise ValueError(f"Expected 0 <= prune_ratio < 1. Received: prune_ratio={prune_ratio}")
  # + 1e-9: 0.9 * 1000 is 900.0000000000001 or 899.9999999999999 depending on the rounding.
  return max(1, n - int(math.floor(prune_ratio * n + 1e-9)))


def topk_mask(scores, prune_ratio, straight_through=True, hard=None):
  """0/1 mask of the shape of `scores` keeping the `n_kept` largest |scores| (whole tensor).

  Forward: exactly `n_kept(scores.size, prune_ratio)` ones. With `straight_through` the
  gradient with respect to |scores| is the incoming gradient unchanged (HYDRA's GetSubnet),
  hence sign(s) * g with respect to s; the value is the same 0/1 mask bit for bit. `hard`: the
  0/1 mask already computed from these scores (`fixed_masks`).
  """
  magnitude = tf.abs(tf.convert_to_tensor(scores))
  if hard is not None:
    return _straight_through(magnitude, hard) if straight_through else hard
  flat = tf.stop_gradient(tf.reshape(magnitude, [-1]))
  k = n_kept(int(flat.shape[0]), prune_ratio)
  # The k-th largest |s| by selection (linear time; top_k of 10% of a 512x512x3x3 kernel took
  # 0.9 s on 2 cores), then every entry above it and, of those equal to it, the first ones.
  threshold = tf.raw_ops.NthElement(input=flat, n=k - 1, reverse=True)
  above = flat > threshold
  ties = tf.equal(flat, threshold)
  room = k - tf.reduce_sum(tf.cast(above, tf.int32))
  keep = above | (ties & (tf.cumsum(tf.cast(ties, tf.int32)) <= room))
  hard = tf.reshape(tf.cast(keep, magnitude.dtype), tf.shape(magnitude))
  return _straight_through(magnitude, hard) if straight_through else hard


@tf.custom_gradient
def _straight_through(magnitude, hard):
  """`hard` in the forward pass; the incoming gradient goes to `magnitude` unchanged."""
  return tf.identity(hard), lambda g: (g, tf.zeros_like(hard))


def hydra_layers(net):
  """The layers of `net` holding HYDRA scores (Subnet layers and TopKMask sites)."""
  net = getattr(net, "net", net)  # through a wrapper such as anp.evaluation.sap.SapNet
  return [l for l in sublayers(net) if isinstance(l, (_Subnet, TopKMask))]


def hydra_masks(net):
  """The 0/1 masks of `net`'s HYDRA layers for `fixed_masks`: a list in `hydra_layers` order,
  each of the shape of its layer's scores."""
  return [topk_mask(l.scores, l.prune_ratio, straight_through=False) for l in hydra_layers(net)]


@contextlib.contextmanager
def fixed_masks(net, masks=None):
  """Within the block, `net`'s HYDRA layers use `masks` (default: computed on entry).

  The top-k of a large kernel costs more than the layer's convolution on a CPU (0.3 s for a
  512x512x3x3 kernel on 2 cores), and the scores do not change within an attack: `attack_fn`
  computes them once per batch. Forward values and gradients are the same as without it.
  `masks` (a list as `hydra_masks` returns) goes onto the layers themselves (`fixed_mask`), so
  the block fixes this net only; on exit each layer gets back what it had (an outer block's
  masks, else None).
  """
  sites = hydra_layers(net)
  masks = hydra_masks(net) if masks is None else list(masks)
  if len(masks) != len(sites):
    raise ValueError(f"Expected one mask per HYDRA layer ({len(sites)}). "
                     f"Received: {len(masks)} masks")
  previous = [l.fixed_mask for l in sites]
  for layer, mask in zip(sites, masks):
    layer.fixed_mask = mask
  try:
    yield
  finally:
    for layer, mask in zip(sites, previous):
      layer.fixed_mask = mask


class _Subnet:
  """What the unstructured layers share: the `scores` variable and the masked kernel.

  `fixed_mask`: the 0/1 mask set by `fixed_masks` within its block, else None.
  """

  fixed_mask = None

  def _add_scores(self, shape):
    # Set from the pretrained weights by `anp.methods.hydra.init_scores`, or restored.
    self.scores = self.add_weight(name="scores", shape=shape, initializer="zeros")

  def kernel_mask(self, straight_through=False):
    """The 0/1 mask of the kernel (shape of the kernel)."""
    return topk_mask(self.scores, self.prune_ratio, straight_through, self.fixed_mask)

  def effective_kernel(self):
    """kernel * mask: the weights the layer computes with (pruned entries exactly 0)."""
    return self.kernel * self.kernel_mask(straight_through=True)

  def _subnet_config(self, config):
    config.update(prune_ratio=self.prune_ratio)
    return config


@keras.saving.register_keras_serializable(package="anp")
class SubnetConv2D(_Subnet, layers.Conv2D):
  """Conv2D computing with kernel * top-k(|scores|). Input/output as `keras.layers.Conv2D`.

  `positions` (set at build): output height x width, for counting multiply-adds.
  """

  def __init__(self, *args, prune_ratio=0.0, **kwargs):
    super().__init__(*args, **kwargs)
    n_kept(1, prune_ratio)  # validates
    self.prune_ratio = float(prune_ratio)

  def build(self, input_shape):
    super().build(input_shape)
    self._add_scores(self.kernel.shape)
    out = self.compute_output_shape(input_shape)
    self.positions = int(out[1]) * int(out[2])

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, kernel * self.kernel_mask(straight_through=True))

  def get_config(self):
    return self._subnet_config(super().get_config())


@keras.saving.register_keras_serializable(package="anp")
class SubnetDense(_Subnet, layers.Dense):
  """Dense computing with kernel * top-k(|scores|): [B, n_in] -> [B, units]."""

  positions = 1

  def __init__(self, *args, prune_ratio=0.0, **kwargs):
    super().__init__(*args, **kwargs)
    n_kept(1, prune_ratio)
    self.prune_ratio = float(prune_ratio)

  def build(self, input_shape):
    super().build(input_shape)
    self._add_scores(self.kernel.shape)

  def call(self, inputs, training=None):
    del training
    x = tf.matmul(inputs, self.effective_kernel())
    if self.bias is not None:
      x = x + self.bias
    return self.activation(x) if self.activation is not None else x

  def get_config(self):
    return self._subnet_config(super().get_config())


@keras.saving.register_keras_serializable(package="anp")
class TopKMask(layers.Layer):
  """Structured HYDRA mask of a unit site: x * top-k(|scores|) over the last axis.

  Input [B, ..., units] (dense features or NHWC maps); output the same shape. The same 0/1
  mask in training and inference (no noise); same interface as `models.masks.BetaBernoulli`
  (`inference_mask`, `keep`, `n_active`, `kl`), so the compact export and the attack path of
  the networks treat it as any mask site. `fixed_mask`: as `_Subnet`'s.
  """

  fixed_mask = None

  def __init__(self, prune_ratio=0.0, **kwargs):
    super().__init__(**kwargs)
    n_kept(1, prune_ratio)
    self.prune_ratio = float(prune_ratio)

  def build(self, input_shape):
    self.units = int(input_shape[-1])
    self.scores = self.add_weight(name="scores", shape=(self.units,), initializer="zeros")

  def inference_mask(self):
    """The 0/1 mask [units] (float32)."""
    return topk_mask(self.scores, self.prune_ratio, False, self.fixed_mask)

  def keep(self):
    return self.inference_mask() > 0

  def n_active(self):
    return tf.reduce_sum(tf.cast(self.keep(), tf.int32))

  def kl(self):
    return tf.constant(0.0)

  def call(self, x, training=False, seed=None):
    del training, seed
    return x * tf.cast(topk_mask(self.scores, self.prune_ratio, True, self.fixed_mask),
                       x.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "prune_ratio": self.prune_ratio}


def kernel_of(layer):
  """The kernel a Conv2D/Dense layer computes with (pruned entries zeroed for Subnet layers)."""
  return layer.effective_kernel() if isinstance(layer, _Subnet) else layer.kernel


def subnet_layers(net):
  """The unstructured HYDRA layers of a network, in creation order ([] for a non-Keras model,
  e.g. a SavedModel)."""
  return [l for l in hydra_layers(net) if isinstance(l, _Subnet)]
