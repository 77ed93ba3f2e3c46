"""Adv-BNN (Liu et al., ICLR 2019): the attack it trains on and its ensemble prediction.

The network is a `MaskedNet` built with Bayesian layers (`anp.bayesian`): each call draws one
weight sample per layer. Adv-BNN trains it on L-inf PGD examples crafted on the stochastic
network, a new weight sample at every PGD step (`sampled_pgd`), and predicts with the mean of
the softmax over several weight samples (`ensemble_logits`, `BnnEnsemble`; the authors'
`ensemble_inference`). Because every prediction is random, its white-box evaluation attacks
with expectation over transformation (EOT, Athalye et al. 2018): `--mode=eval` averages
BNN_EOT_SAMPLES gradients per step unless --eot_samples says otherwise.
"""

import keras
import numpy as np
import tensorflow as tf

from attacks import common


def sampled_pgd(model_fn, x, y, eps, step_size, steps, *, seed=None, clip_min=0.0,
                clip_max=1.0):
  """L-inf PGD on the cross-entropy of a stochastic network, one weight sample per step.

  Args:
    model_fn: `model_fn(x, seed=None) -> logits [B, n_classes]`, one weight sample per call,
      stateless from a shape-[2] `seed`.
    x: inputs [B, ...]; y: integer labels [B].
    eps, step_size, steps (a Python int), clip_min, clip_max: as `attacks.pgd`.
    seed: optional int (scalar tensor): the random start (as `attacks.pgd` with that seed) and
      step i's weight sample (seed (seed, i + 1)) become pure functions of it; without it,
      fresh samples.
  Returns:
    x_adv like x, within eps of x and within the box.
  """
  x, y, steps, _, loss_fn = common.check_attack_args(
      x, y, steps, 1, clip_min, clip_max, "ce", python_int=True, eps=eps, step_size=step_size)
  eps = tf.cast(eps, x.dtype)
  project = common.linf_projector(x, eps, clip_min, clip_max)
  x_adv = project(x + common.random_uniform(tf.shape(x), -eps, eps, x.dtype, seed))

  def body(i, x_adv):
    step_seed = None if seed is None else tf.stack(
        [tf.cast(seed, tf.int64), tf.cast(i, tf.int64) + 1])
    with tf.GradientTape() as tape:
      tape.watch(x_adv)
      loss = tf.reduce_sum(loss_fn(tf.cast(model_fn(x_adv, seed=step_seed), tf.float32), y))
    grad = tape.gradient(loss, x_adv)
    return i + 1, project(x_adv + tf.cast(step_size, x.dtype) * tf.sign(grad))

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
  return tf.stop_gradient(x_adv)


def ensemble_logits(net, x, samples, return_features=False, **kwargs):
  """Log of the mean softmax of `samples` weight samples of `net` in inference mode.

  Returns logits [B, n_classes] (softmax of them = the mean of the samples' softmax), with
  `return_features` also the mean of each latent feature map over the samples. The samples
  run in a `tf.while_loop`: the graph does not grow with `samples`.
  """
  def one(x):
    out = net(x, training=False, return_features=return_features, **kwargs)
    logits, feats = out if return_features else (out, [])
    return tf.nn.log_softmax(logits), list(feats)

  first = one(x)

  def body(i, log_p, feats):
    new_log_p, new_feats = one(x)
    return (i + 1, tf.reduce_logsumexp(tf.stack([log_p, new_log_p]), axis=0),
            [a + b for a, b in zip(feats, new_feats)])

  _, log_p, feats = tf.while_loop(lambda i, *_: i < samples, body,
                                  (tf.constant(1), *first))
  log_p = log_p - tf.math.log(tf.cast(samples, log_p.dtype))
  if return_features:
    return log_p, [f / tf.cast(samples, f.dtype) for f in feats]
  return log_p


class BnnEnsemble:
  """An Adv-BNN network as --mode=eval sees it: predictions (and features) are the ensemble
  of `samples` weight samples; attacks are crafted through `attack_fn()`, one weight sample
  per call (with --eot_samples they average several calls' gradients), or through the
  ensemble itself with --nocompact_attack.
  """

  def __init__(self, net, samples=20):
    if not (isinstance(samples, int) and samples >= 1):
      raise ValueError(f"Expected an integer samples >= 1. Received: samples={samples!r}")
    self.net = net
    self.samples = samples
    self.masks = net.masks
    self.unit_counts = net.unit_counts

  def n_active(self):
    return self.net.n_active()

  def attack_fn(self, dtype=tf.float32):
    return self.net.attack_fn(dtype)

  def __call__(self, x, training=False, return_features=False, **kwargs):
    del training
    return ensemble_logits(self.net, x, self.samples, return_features, **kwargs)


@keras.saving.register_keras_serializable(package="anp")
class EnsembleLogits(keras.layers.Layer):
  """The ensemble prediction as a Keras layer (for the SavedModel of --mode=export): images
  [B, H, W, C] -> log of the mean softmax over `samples` weight samples of `net`."""

  def __init__(self, net, samples=20, **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.samples = int(samples)

  def call(self, x, training=False):
    del training  # always the posterior's samples
    return ensemble_logits(self.net, x, self.samples)


def parameter_counts(net):
  """{'mean': parameters of the mean network, 'total': with the log-sigmas (about 2x)}."""
  total = int(sum(np.prod(v.shape) for v in net.weights))
  sigmas = int(sum(np.prod(v.shape) for layer in net.bayes_layers
                   for v in layer.log_sigma_variables))
  return dict(mean=total - sigmas, total=total)

