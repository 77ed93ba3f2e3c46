"""LeNet5-Caffe with beta-Bernoulli masks, as in the ANP-VS code (NHWC here)."""

import keras
import tensorflow as tf

from models.base import MaskedNet

layers = keras.layers


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
    self.conv1 = layers.Conv2D(20, 5, padding="valid", **self._layer_args("conv1"))
    self.bbd1 = self._mask(-1.0, "bbd1")
    self.conv2 = layers.Conv2D(50, 5, padding="valid", **self._layer_args("conv2"))
    self.bbd2 = self._mask(-1.0, "bbd2")
    self.bbd3 = self._mask(-1.0, "bbd3")
    self.dense3 = layers.Dense(500, **self._layer_args("dense3"))
    self.bbd4 = self._mask(-1.0, "bbd4")
    self.dense4 = layers.Dense(self.n_classes, **self._layer_args("dense4"))
    self.pool = layers.MaxPooling2D(2, 2)
    self.flatten = layers.Flatten()

  def call(self, x, training=False, return_features=False, seed=None):
    features = []
    x = tf.nn.relu(self._apply(self.bbd1, self.conv1(x), training, seed))
    features.append(x)
    x = self.pool(x)
    x = tf.nn.relu(self._apply(self.bbd2, self.conv2(x), training, seed))
    features.append(x)
    x = self.flatten(self.pool(x))
    x = tf.nn.relu(self.dense3(self._apply(self.bbd3, x, training, seed)))
    features.append(x)
    logits = self.dense4(self._apply(self.bbd4, x, training, seed))
    return (logits, features) if return_features else logits

  def get_config(self):
    config = super().get_config()
    config.update(n_classes=self.n_classes)
    return config
