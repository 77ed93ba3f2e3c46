"""Adv-BNN (Liu et al., ICLR 2019), --method=at_bnn: its ensemble prediction and the method.

The network is a `MaskedNet` built with Bayesian layers (`models.bayesian`): each call draws one
weight sample per layer. Adv-BNN trains it on L-inf PGD examples crafted on the stochastic
network, a new weight sample at every PGD step (`attacks.sampled_pgd`), and predicts with the
mean of the softmax over several weight samples (`ensemble_logits`, `BnnEnsemble`; the authors'
`ensemble_inference`). Because every prediction is random, its white-box evaluation attacks
with expectation over transformation (EOT, Athalye et al. 2018): `--mode=eval` averages
BNN_EOT_SAMPLES gradients per step unless --eot_samples says otherwise.
"""

import keras
import tensorflow as tf

from anp.deploy import efficiency
from anp.errors import UserError
from anp.methods.base import Method
from attacks.autoattack import RAND_EOT_SAMPLES

# Prior N(0, sigma_0^2) and initial posterior sigma of every weight (the authors' CIFAR-10
# script: sigma_0 = init_s = 0.05; no MNIST setting was published), KL weight alpha = 1 (their
# --alpha default, our --beta); EOT samples of its --mode=eval attacks: those of AutoAttack's
# version for random models (`attacks.autoattack.RAND_EOT_SAMPLES`), for every attack alike.
BNN_DEFAULTS = dict(bnn_prior_sigma=0.05, bnn_init_sigma=0.05, beta=1.0)
BNN_EOT_SAMPLES = RAND_EOT_SAMPLES


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
  total = efficiency.count_params(net.weights)
  sigmas = efficiency.count_params([v for layer in net.bayes_layers
                                    for v in layer.log_sigma_variables])
  return dict(mean=total - sigmas, total=total)


class AdvBNN(Method):
  """Adversarial training of a mean-field Gaussian network: CE(x_adv) on `sampled_pgd`
  examples plus alpha KL(q || p) / N (`anp.training.objectives.SampledCE`, alpha = --beta)."""

  name, title = "at_bnn", "Adv-BNN"
  deterministic = False

  def resolve(self, cfg):
    for key, value in BNN_DEFAULTS.items():
      if getattr(cfg, key) is None:
        setattr(cfg, key, value)

  def data_term(self, cfg):
    del cfg
    return "sampled"

  def net_options(self, cfg):
    return dict(masked=False, bayes=(cfg.bnn_prior_sigma, cfg.bnn_init_sigma))

  def check_export(self, mode):
    if mode == "prune":
      raise UserError("Flag --mode=prune: an Adv-BNN run (--method=at_bnn) has no masks and "
                      "no pruned units; use --mode=export.")

  def evaluation_defaults(self, cfg):
    # Stochastic by design: EOT unless told otherwise.
    return dict(eot_samples=BNN_EOT_SAMPLES) if cfg.eot_samples is None else {}

  def inference_net(self, net, cfg, kind):
    if kind == "saved_model":  # an export holds its own ensemble
      return net, None
    return (BnnEnsemble(net, cfg.bnn_ensemble),
            dict(ensemble=cfg.bnn_ensemble, parameters=parameter_counts(net)))

  def size_columns(self, columns, info):
    """Memory counts the log-sigmas too, a stored parameter each (200% of the mean network,
    as the paper counts Adv-BNN); Flops counts the forward passes of one prediction, one per
    weight sample of the ensemble (the draws, one per call shared by the whole batch, not
    counted)."""
    if info is None or columns["memory_pct"] is None:
      return columns
    counts = info["parameters"]
    return dict(columns, memory_pct=columns["memory_pct"] * counts["total"] / counts["mean"],
                flops_ratio=columns["flops_ratio"] / info["ensemble"])

  def serving_net(self, net, cfg, serving_cfg):
    serving_cfg.bnn_ensemble = cfg.bnn_ensemble
    print(f"Adv-BNN: the SavedModel draws {cfg.bnn_ensemble} weight samples per call and "
          "serves their mean softmax (logits = its log); every call is random.")
    return EnsembleLogits(net, cfg.bnn_ensemble)
