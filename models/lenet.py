"""LeNet5-Caffe with beta-Bernoulli masks, as in the ANP-VS code (NHWC here)."""

import keras
import tensorflow as tf

from models.base import MaskedNet
from models.ops import conv2d_one_channel, max_pool_2x2
from models.subnet import kernel_of

layers = keras.layers


def _fast_forward(x, w1, b1, w2, b2, w3, b3, w4, b4, inputs=None):
  """LeNet5's logits from its layers' weights through the fast gradients of `models.ops`
  (max-pooling before the ReLU: they commute); `inputs`: the flattened conv2 outputs dense3
  takes (its rows), None for all."""
  with tf.name_scope("attack_conv1"):
    h = tf.nn.relu(max_pool_2x2(conv2d_one_channel(x, w1) + b1))
  with tf.name_scope("attack_conv2"):
    h = tf.nn.relu(max_pool_2x2(tf.nn.conv2d(h, w2, 1, "VALID") + b2))
  with tf.name_scope("attack_dense"):
    h = tf.reshape(h, [tf.shape(h)[0], -1])
    if inputs is not None:
      h = tf.gather(h, inputs, axis=1)
    return tf.nn.relu(h @ w3 + b3) @ w4 + b4


@keras.saving.register_keras_serializable(package="anp")
class LeNet5(MaskedNet):
  """conv5x5(20) - pool - conv5x5(50) - pool - dense(500) - dense(n_classes).

  Masks sit on the conv1 and conv2 channels, on the 800 flattened inputs of dense3 and
  on the 500 inputs of dense4 (`unit_counts` = [20, 50, 800, 500]). Input
  [B, 28, 28, 1] in [0, 1]. Features: the post-ReLU outputs of conv1, conv2 and dense3.
  Flattening is in NHWC order (the original flattens NCHW; see the checkpoint mapping).
  """

  unit_counts = (20, 50, 800, 500)

  def __init__(self, n_classes=10, masked=True, threshold=1e-3, **kwargs):
    super().__init__(masked=masked, threshold=threshold, **kwargs)
    self.n_classes = int(n_classes)
    self.masks = []
    self.conv1 = self._conv(20, 5, "conv1", padding="valid")
    self.bbd1 = self._mask(-1.0, "bbd1")
    self.conv2 = self._conv(50, 5, "conv2", padding="valid")
    self.bbd2 = self._mask(-1.0, "bbd2")
    self.bbd3 = self._mask(-1.0, "bbd3")
    self.dense3 = self._dense(500, "dense3")
    self.bbd4 = self._mask(-1.0, "bbd4")
    self.dense4 = self._dense(self.n_classes, "dense4")
    self.pool = layers.MaxPooling2D(2, 2)
    self.flatten = layers.Flatten()

  def call(self, x, training=False, return_features=False, seed=None, activation_hook=None):
    hook = activation_hook or (lambda h: h)
    features = []
    x = hook(tf.nn.relu(self._apply(self.bbd1, self._layer(self.conv1, x, seed), training,
                                    seed)))
    features.append(x)
    x = self.pool(x)
    x = hook(tf.nn.relu(self._apply(self.bbd2, self._layer(self.conv2, x, seed), training,
                                    seed)))
    features.append(x)
    x = self.flatten(self.pool(x))
    x = hook(tf.nn.relu(self._layer(self.dense3, self._apply(self.bbd3, x, training, seed),
                                    seed)))
    features.append(x)
    logits = self._layer(self.dense4, self._apply(self.bbd4, x, training, seed), seed)
    return (logits, features) if return_features else logits

  def attack_fn(self, dtype=tf.float32):
    """x -> inference-mode logits computed without the pruned units.

    The deterministic masks are folded into the weights (m * (Wx + b) = (m W) x + m b) and the
    units they zero are gathered away, so attacking a pruned LeNet costs the compact model's
    FLOPs; max-pooling comes before the ReLU (they commute), and conv1 and the pools take the
    fast gradients of `models.ops`. Logits equal `self(x)` up to float rounding.
    A Bayesian LeNet without masks (Adv-BNN's) gets `logits(x, seed=None)`: each call draws
    the weight sample `self(x, seed=seed)` draws, its sigmas computed once, through the same
    fast ops; one with masks is attacked through its sampled layers (`MaskedNet.attack_fn`).
    `dtype` (e.g. tf.bfloat16, `--train_attack_dtype`): the weights and every op of the
    forward and backward pass in that type; x, the logits and so the input gradient stay
    float32.
    """
    if self.bayes is not None:
      if self.masks or tf.as_dtype(dtype) != tf.float32:
        return super().attack_fn(dtype)
      return self._sampled_attack_fn()
    masks = ([m.inference_mask() for m in self.masks] if self.masks
             else [tf.ones([n]) for n in self.unit_counts])
    kept = [tf.reshape(tf.where(m > 0), [-1]) for m in masks]
    m1, m2, m3, m4 = [tf.gather(m, k) for m, k in zip(masks, kept)]
    k1, k2, _, k4 = kept
    kernel1, kernel2, kernel3, kernel4 = (kernel_of(layer) for layer in (
        self.conv1, self.conv2, self.dense3, self.dense4))  # HYDRA's zeros included
    w1 = tf.gather(kernel1, k1, axis=3) * m1
    b1 = tf.gather(self.conv1.bias, k1) * m1
    w2 = tf.gather(tf.gather(kernel2, k1, axis=2), k2, axis=3) * m2
    b2 = tf.gather(self.conv2.bias, k2) * m2
    # Inputs of dense3: the NHWC flattening of [4, 4, 50] keeps (position p, kept channel c)
    # at p * len(k2) + j in the compact map; row p * 50 + c of dense3.
    channels = self.conv2.filters
    positions = self.dense3.kernel.shape[0] // channels
    rows = tf.reshape(tf.range(positions, dtype=k2.dtype)[:, None] * channels + k2[None], [-1])
    m3 = tf.gather(masks[2], rows)
    inputs = tf.reshape(tf.where(m3 > 0), [-1])
    w3 = tf.gather(tf.gather(kernel3, tf.gather(rows, inputs)), k4, axis=1)
    w3 *= tf.gather(m3, inputs)[:, None]
    b3 = tf.gather(self.dense3.bias, k4)
    w4 = tf.gather(kernel4, k4) * m4[:, None]
    b4 = self.dense4.bias
    weights = [tf.cast(v, dtype) for v in (w1, b1, w2, b2, w3, b3, w4, b4)]
    inputs = inputs if self.masks else None  # else every input is kept: no gather needed

    def logits(x):
      return tf.cast(_fast_forward(tf.cast(x, dtype), *weights, inputs), tf.float32)

    return logits

  def _sampled_attack_fn(self):
    layers_ = (self.conv1, self.conv2, self.dense3, self.dense4)
    sigmas = [layer.sigmas() for layer in layers_]

    def logits(x, seed=None):
      weights = [w for layer, sigma in zip(layers_, sigmas)
                 for w in layer.sample_weights(self._layer_seed(layer, seed), sigma)]
      return _fast_forward(x, *weights)

    return logits

  def get_config(self):
    config = super().get_config()
    config.update(n_classes=self.n_classes)
    return config
