"""Kernels stored as their non-zero entries: the compact form of weight (unstructured) pruning.

Weight pruning (HYDRA, LWM, ADMM, AWT with `--hydra_granularity=weight`) zeroes kernel entries
without removing any unit, so the pruned network keeps its dense shapes. `SparseKernel` is the
Conv2D / Dense layer of such a kernel that stores only what is left: `positions` (int32 [nnz],
the row-major flat index of each kept entry in the kernel) and `values` (float32 [nnz]), 8 bytes
per kept entry where the dense kernel takes 4 per entry: `anp.deploy.compact` uses it for the
kernels under a quarter full, at most half their dense bytes.

Every call rebuilds the dense kernel (SparseToDense, then the dense op): the outputs are the
dense layer's, and the time is the dense layer's plus the rebuild. TF's sparse-dense matmul
would skip the zeros but runs slower than the dense matmul on CPU from batch 64 on
(`bench/inference.py --weight_prune=0.9315`), so the maths stays dense.
"""

import keras
import numpy as np
import tensorflow as tf

layers = keras.layers


@keras.saving.register_keras_serializable(package="anp")
class SparseKernel(layers.Layer):
  """Conv2D (stride 1) or Dense whose kernel keeps only its non-zero entries.

  Args:
    kernel_shape: [kh, kw, c_in, c_out] (a convolution) or [n_in, n_out] (a dense layer).
    nnz: the number of kept entries.
    padding: "valid" or "same" (convolutions).
    activation: a Keras activation applied after the bias.

  Input [B, H, W, c_in] (conv) or [B, n_in]; output [B, H', W', c_out] or [B, n_out].
  Weights: positions (int32 [nnz]), values (float32 [nnz]), bias (float32 [c_out]).
  """

  def __init__(self, kernel_shape, nnz, padding="valid", activation=None, **kwargs):
    super().__init__(**kwargs)
    self.kernel_shape = tuple(int(d) for d in kernel_shape)
    if len(self.kernel_shape) not in (2, 4):
      raise ValueError(f"Expected a 2-D or 4-D kernel shape. Received: {kernel_shape}")
    self.nnz = int(nnz)
    self.padding = padding
    self.activation = keras.activations.get(activation)

  def build(self, input_shape):
    zeros = dict(initializer="zeros", trainable=False)
    self.positions = self.add_weight(name="positions", shape=(self.nnz,), dtype="int32",
                                     **zeros)
    self.values = self.add_weight(name="values", shape=(self.nnz,), **zeros)
    self.bias = self.add_weight(name="bias", shape=(self.kernel_shape[-1],), **zeros)

  def kernel(self):
    """The dense kernel, zeros included."""
    size = int(np.prod(self.kernel_shape))
    positions = tf.cast(tf.convert_to_tensor(self.positions), tf.int64)[:, None]
    flat = tf.sparse.to_dense(tf.SparseTensor(positions, self.values, [size]))
    return tf.reshape(flat, self.kernel_shape)

  def call(self, x):
    if len(self.kernel_shape) == 4:
      y = tf.nn.conv2d(x, self.kernel(), 1, self.padding.upper())
    else:
      y = tf.matmul(x, self.kernel())
    return self.activation(y + self.bias)

  def get_config(self):
    return {**super().get_config(), "kernel_shape": list(self.kernel_shape), "nnz": self.nnz,
            "padding": self.padding, "activation": keras.activations.serialize(self.activation)}


def sparse_weights(kernel, bias):
  """The weights of `SparseKernel` holding `kernel` (any shape) and `bias`, in its order."""
  flat = np.asarray(kernel, np.float32).reshape(-1)
  positions = np.flatnonzero(flat)
  return positions.astype(np.int32), flat[positions], np.asarray(bias, np.float32)
