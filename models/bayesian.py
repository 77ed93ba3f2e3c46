"""Mean-field Gaussian (Bayesian) Conv2D and Dense layers for Adv-BNN (Liu et al., ICLR 2019).

"Adv-BNN: Improved Adversarial Defense through Robust Bayesian Neural Network" models every
weight w (kernels and biases) with a factorised Gaussian posterior q(w) = N(mu, sigma^2),
sigma = exp(s), and a fixed prior p(w) = N(0, sigma_0^2). The layers here keep the means in
the usual `kernel` / `bias` variables (so `.kernel` is the mean network, and a standard run's
checkpoint initialises the means through --init_from) and the log standard deviations s in
`kernel_log_sigma` / `bias_log_sigma`, initialised to log(init_sigma), as the authors' code.

Every call draws one weight sample w = mu + sigma * e, e ~ N(0, I), shared by the batch
(the authors' code does the same), in training and at inference alike: the defence is the
randomness. With `seed` (shape-[2] integers) the draw is stateless, a pure function of the
seed (exact resume); without it, a fresh sample per call.
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def gaussian_kl(mu, log_sigma, prior_sigma):
  """Sum over elements of KL(N(mu, exp(log_sigma)^2) || N(0, prior_sigma^2)) (scalar).

  Closed form per element: log(sigma_0 / sigma) + (sigma^2 + mu^2) / (2 sigma_0^2) - 1/2.
  """
  posterior = tfd.Normal(loc=mu, scale=tf.exp(log_sigma))
  prior = tfd.Normal(loc=tf.zeros([], mu.dtype), scale=tf.cast(prior_sigma, mu.dtype))
  return tf.reduce_sum(tfd.kl_divergence(posterior, prior))


def standard_normal(shape, seed=None, dtype=tf.float32):
  """N(0, 1) samples of a static `shape` by the Box-Muller transform of uniforms.

  Pairs (u1, u2) of U[0, 1) give r cos(2 pi u2) and r sin(2 pi u2), r = sqrt(-2 log(1 - u1)):
  two independent standard normals (Box & Muller 1958), the transform of TF's own CPU normal
  kernel, here as whole-tensor ops: about 1.8x faster on CPU, where drawing the weights of a
  Bayesian LeNet5 is a third of an Adv-BNN step (`bench/train_step.py --method=at_bnn`).
  Stateless, a pure function of a shape-[2] `seed`, when given.
  """
  n = math.prod(shape)
  half = (n + 1) // 2
  u = (tf.random.uniform([2, half], dtype=dtype) if seed is None
       else tf.random.stateless_uniform([2, half], seed, dtype=dtype))
  r = tf.sqrt(-2.0 * tf.math.log1p(-u[0]))
  angle = (2.0 * math.pi) * u[1]
  pairs = tf.reshape(tf.stack([r * tf.cos(angle), r * tf.sin(angle)]), [-1])
  return tf.reshape(pairs if n % 2 == 0 else pairs[:n], shape)


class _Gaussian:
  """What the two layers share: log-sigma variables, sampling, KL."""

  def _check(self, prior_sigma, init_sigma):
    for name, value in (("prior_sigma", prior_sigma), ("init_sigma", init_sigma)):
      if not value > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value}")
    self.prior_sigma = float(prior_sigma)
    self.init_sigma = float(init_sigma)

  def _add_log_sigmas(self):
    init = keras.initializers.Constant(math.log(self.init_sigma))
    self.kernel_log_sigma = self.add_weight(name="kernel_log_sigma", shape=self.kernel.shape,
                                            initializer=init)
    self.bias_log_sigma = (self.add_weight(name="bias_log_sigma", shape=self.bias.shape,
                                           initializer=init) if self.use_bias else None)

  def sigmas(self):
    """(kernel sigma, bias sigma or None): exp of the log-sigma variables."""
    return tuple(None if s is None else tf.exp(s)
                 for s in (self.kernel_log_sigma, self.bias_log_sigma))

  def sample_weights(self, seed=None, sigmas=None):
    """(kernel, bias) drawn from the posterior; stateless with a shape-[2] `seed`.

    `sigmas`: `self.sigmas()` computed once beforehand (an attack draws many samples of
    unchanged variables); by default computed here.
    """
    seeds = ([None, None] if seed is None
             else tf.unstack(tf.random.experimental.stateless_split(seed, 2)))
    sigmas = self.sigmas() if sigmas is None else sigmas

    def draw(mu, sigma, s):
      mu = tf.convert_to_tensor(mu)
      return mu + sigma * standard_normal(mu.shape, s, mu.dtype)

    kernel = draw(self.kernel, sigmas[0], seeds[0])
    bias = draw(self.bias, sigmas[1], seeds[1]) if self.use_bias else None
    return kernel, bias

  def kl(self):
    """KL(q || p) of this layer's kernel and bias (scalar, >= 0)."""
    kl = gaussian_kl(self.kernel, self.kernel_log_sigma, self.prior_sigma)
    if self.use_bias:
      kl += gaussian_kl(self.bias, self.bias_log_sigma, self.prior_sigma)
    return kl

  @property
  def log_sigma_variables(self):
    return [v for v in (self.kernel_log_sigma, self.bias_log_sigma) if v is not None]

  def _gaussian_config(self, config):
    config.update(prior_sigma=self.prior_sigma, init_sigma=self.init_sigma)
    return config

  def build(self, input_shape):
    super().build(input_shape)
    self._add_log_sigmas()

  def _finish(self, out, bias):
    """The layer's output from its sampled linear map: + bias, then the activation."""
    if bias is not None:
      out = out + bias
    return self.activation(out) if self.activation is not None else out

  def get_config(self):
    return self._gaussian_config(super().get_config())


@keras.saving.register_keras_serializable(package="anp")
class BayesConv2D(_Gaussian, keras.layers.Conv2D):
  """keras.layers.Conv2D with N(kernel, exp(kernel_log_sigma)^2) weights (and bias alike).

  Input [B, H, W, C_in] (channels last), output [B, H', W', filters]; `call(x, seed=None)`.
  """

  def __init__(self, filters, kernel_size, prior_sigma=0.05, init_sigma=0.05, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    self._check(prior_sigma, init_sigma)

  def call(self, inputs, seed=None):
    kernel, bias = self.sample_weights(seed)
    return self._finish(self.convolution_op(inputs, kernel), bias)


@keras.saving.register_keras_serializable(package="anp")
class BayesDense(_Gaussian, keras.layers.Dense):
  """keras.layers.Dense with N(kernel, exp(kernel_log_sigma)^2) weights (and bias alike).

  Input [B, in], output [B, units]; `call(x, seed=None)`.
  """

  def __init__(self, units, prior_sigma=0.05, init_sigma=0.05, **kwargs):
    super().__init__(units, **kwargs)
    self._check(prior_sigma, init_sigma)

  def call(self, inputs, seed=None):
    kernel, bias = self.sample_weights(seed)
    return self._finish(tf.matmul(inputs, kernel), bias)
