"""VGG-16 with batch norm and beta-Bernoulli masks, as in the ANP-VS code (NHWC here)."""

import keras
import tensorflow as tf

from models import replica_rows
from models.base import MaskedNet

layers = keras.layers

# (filters, what follows the block): a dropout rate, or 'M' for 2x2 max pooling.
VGG16 = ((64, 0.3), (64, "M"),
         (128, 0.4), (128, "M"),
         (256, 0.4), (256, 0.4), (256, "M"),
         (512, 0.4), (512, 0.4), (512, "M"),
         (512, 0.4), (512, 0.4), (512, "M"))


@keras.saving.register_keras_serializable(package="anp")
class VGG(MaskedNet):
  """VGG-16 of the ANP-VS code: 13 conv3x3+BN+ReLU blocks, dense 512 + BN, dense n_classes.

  Each conv block is conv -> mask -> BN -> ReLU -> (dropout | max-pool); the masks of the
  conv blocks start at a_uc = 2.0. Two more masks sit on the 512 flattened features and on
  the 512 inputs of the last dense layer. Unmasked networks (`masked=False`) also apply
  dropout 0.5 before both dense layers, as the original's 'base' mode does.
  Input [B, 32, 32, 3]; with `standardize=True` each image is standardized first
  (tf.image.per_image_standardization, the original's input normalisation), so that the
  model takes pixels in [0, 1]. Features (15, as in the original): the 13 block outputs,
  the dense14 output before its BN, and the post-BN ReLU.
  """

  def __init__(self, n_classes=10, masked=True, threshold=1e-3, standardize=True,
               config=VGG16, **kwargs):
    super().__init__(masked=masked, threshold=threshold, **kwargs)
    self.n_classes = int(n_classes)
    self.standardize = bool(standardize)
    self.config = tuple((int(f), a) for f, a in config)
    self.unit_counts = tuple(f for f, _ in self.config) + (512, 512)
    self.masks = []
    self.blocks = []
    for i, (filters, after) in enumerate(self.config, start=1):
      self.blocks.append(dict(
          conv=self._conv(filters, 3, f"conv{i}", padding="same"),
          mask=self._mask(2.0, f"bbd{i}"),
          bn=layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"bn{i}"),
          after=layers.MaxPooling2D(2, 2) if after == "M" else layers.Dropout(after)))
    # The blocks' layers as attributes: TF checkpoints do not see layers inside a list of
    # dicts, and a checkpoint without them would neither resume nor initialise another run.
    for i, block in enumerate(self.blocks, start=1):
      for kind, layer in block.items():
        if layer is not None:
          setattr(self, f"block{i}_{kind}", layer)
    n = len(self.config)
    self.flatten = layers.Flatten()
    self.bbd_fc1 = self._mask(-1.0, f"bbd{n + 1}")
    self.dense_fc1 = self._dense(512, f"dense{n + 1}")
    self.bn_fc1 = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"bn{n + 1}")
    self.bbd_fc2 = self._mask(-1.0, f"bbd{n + 2}")
    self.dense_fc2 = self._dense(self.n_classes, f"dense{n + 2}")
    self.dropout_fc = layers.Dropout(0.5)

  def call(self, x, training=False, return_features=False, seed=None, activation_hook=None):
    hook = activation_hook or (lambda h: h)
    features = []
    if self.standardize:
      x = tf.image.per_image_standardization(x)
    for site, block in enumerate(self.blocks, start=len(self.unit_counts)):
      x = self._apply(block["mask"], self._layer(block["conv"], x, seed), training, seed)
      x = hook(tf.nn.relu(block["bn"](x, training=training)))
      features.append(x)
      x = self._after(block["after"], x, training, seed, site)
    x = self.flatten(x)
    if not self.masked:
      x = self._after(self.dropout_fc, x, training, seed, 2 * len(self.unit_counts))
    x = self._layer(self.dense_fc1, self._apply(self.bbd_fc1, x, training, seed), seed)
    features.append(x)
    x = hook(tf.nn.relu(self.bn_fc1(x, training=training)))
    features.append(x)
    if not self.masked:
      x = self._after(self.dropout_fc, x, training, seed, 2 * len(self.unit_counts) + 1)
    logits = self._layer(self.dense_fc2, self._apply(self.bbd_fc2, x, training, seed), seed)
    return (logits, features) if return_features else logits

  def _after(self, layer, x, training, seed, site):
    """A block's max-pool or dropout; seeded dropout is stateless (same rate, same scaling)."""
    if isinstance(layer, layers.Dropout) and training and seed is not None:
      site_seed = self._site_seed(seed, site)
      if replica_rows.active():  # under tf.distribute: this replica's rows of the global draw
        u = replica_rows.per_example_draw(
            lambda s: tf.random.stateless_uniform(s, site_seed, dtype=x.dtype), tf.shape(x))
        return x * (1.0 / (1.0 - layer.rate)) * tf.cast(u >= layer.rate, x.dtype)
      return tf.nn.experimental.stateless_dropout(x, layer.rate, site_seed)
    return layer(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update(n_classes=self.n_classes, standardize=self.standardize,
                  config=[list(c) for c in self.config])
    return config
