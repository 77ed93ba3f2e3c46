"""Fast CPU forms of ops whose stock gradients are slow on small LeNet shapes.

Both are exact rewrites (equal up to float rounding) used by the attack path of the networks
(`MaskedNet.attack_fn`); `bench/train_step.py` measures what they save.
"""

import numpy as np
import tensorflow as tf


def _col2im_matrix(n_out, k):
  """[n_out * k, n_out + k - 1] 0/1 matrix adding patch column q of output j into pixel j + q."""
  s = np.zeros((n_out, k, n_out + k - 1), np.float32)
  for j in range(n_out):
    s[j, np.arange(k), j + np.arange(k)] = 1.0
  return tf.constant(s.reshape(n_out * k, n_out + k - 1))


@tf.custom_gradient
def conv2d_one_channel(x, kernel):
  """VALID, stride-1 conv2d of a one-channel image, with a matmul-based input gradient.

  x: [B, H, W, 1]; kernel: [kh, kw, 1, F]; returns [B, H - kh + 1, W - kw + 1, F].
  The stock input gradient (a transposed convolution to one channel) runs at ~10 GFLOP/s on
  this CPU; here it is one matmul to patch gradients [B, Ho, Wo, kh * kw] and two small
  matmuls with 0/1 matrices that add the patches back (col2im). The kernel gradient is the
  stock one.
  """
  y = tf.nn.conv2d(x, kernel, 1, "VALID")

  def grad(dy):
    kh, kw = kernel.shape[0], kernel.shape[1]
    b, ho, wo = tf.shape(dy)[0], dy.shape[1], dy.shape[2]  # static sizes but for B and F
    patches = tf.matmul(tf.reshape(dy, [-1, tf.shape(dy)[3]]), tf.reshape(kernel, [kh * kw, -1]),
                        transpose_b=True)                               # [B*Ho*Wo, kh*kw]
    d = tf.transpose(tf.reshape(patches, [b, ho, wo, kh, kw]), [0, 1, 3, 2, 4])  # b i p j q
    d = tf.reshape(tf.reshape(d, [-1, wo * kw]) @ tf.cast(_col2im_matrix(wo, kw), d.dtype),
                   [b, ho, kh, wo + kw - 1])                            # b i p J
    d = tf.transpose(d, [0, 3, 1, 2])                                   # b J i p
    d = tf.reshape(tf.reshape(d, [-1, ho * kh]) @ tf.cast(_col2im_matrix(ho, kh), d.dtype),
                   [b, wo + kw - 1, ho + kh - 1])                       # b J I
    dx = tf.transpose(d, [0, 2, 1])[..., None]
    dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                         out_backprop=dy, strides=[1, 1, 1, 1],
                                         padding="VALID")
    return dx, dk

  return y, grad


@tf.custom_gradient
def max_pool_2x2(x):
  """2x2, stride-2 max pooling of NHWC maps with even H and W, with a two-op gradient.

  The gradient goes to every input equal to its window's maximum (the stock MaxPoolGrad
  picks the first of tied maxima: the same wherever the maximum is unique, as for the
  continuous pre-activations `attack_fn` pools). Inside the attack loop TF ran the stock
  gradient as its slow Eigen kernel.
  """
  y = tf.nn.max_pool2d(x, 2, 2, "VALID")

  def grad(dy):
    b, h, w, c = tf.unstack(tf.shape(y))
    x6 = tf.reshape(x, [b, h, 2, w, 2, c])
    hit = tf.equal(x6, tf.reshape(y, [b, h, 1, w, 1, c]))
    dx = tf.where(hit, tf.reshape(dy, [b, h, 1, w, 1, c]), tf.zeros([], dy.dtype))
    return tf.reshape(dx, tf.shape(x))

  return y, grad
