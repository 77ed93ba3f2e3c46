"""`adversarial`: the paper's training methods on a (masked) Keras model, as a Keras model.

The trainer is the CLI's `anp.training.model.AdversarialTrainer`, set up by the method object
(`anp.methods.get(name).trainer_args`) from an `anp.config.Config` resolved as `main.py`
resolves its flags, so the maths is the CLI's: L-inf PGD examples made outside the tape on the
inference-mode network, the weights minimising D + beta KL / N + wd L2 + lambda V(x, x_adv),
the mask parameters CE(x_adv) + beta KL / N (CE(x) for bp) with their own optimizer.
"""

import dataclasses

import keras
import tensorflow as tf

from anp import methods
from anp.api.masked import MaskedModel, add_masks
from anp.config import Config
from anp.errors import UserError
from anp.methods.base import BASE_LR
from anp.training.model import AdversarialTrainer, adam, staircase
from models.base import MaskedNet

# The CLI's --init_lr: masks learn at it, the weights of a masked network at a tenth of it.
INIT_LR = 1e-2


class RobustModel(AdversarialTrainer):
  """The trainer of `adversarial`: `compile` with paper defaults, then Keras `fit`.

  `fit(x, ...)` takes batches (images [B, H, W, C], integer labels [B]) as Keras does; every
  Keras callback works, `keras.callbacks.BackupAndRestore` included (it saves the weights, the
  masks, both optimizers and their step counter, from which the seeded random draws of a step
  derive). Build and compile under a `tf.distribute` strategy scope to train under it.
  N of the KL term (the training set size) is `n_train`, or counted on the first `fit`.
  """

  def compile(self, optimizer=None, mask_optimizer=None, **kwargs):
    """Adam (epsilon 1e-8) at 1e-3 on the weights and, with masks, at 1e-2 on the mask
    parameters (the CLI's constant rates before its decay; `paper_optimizers` gives the
    decayed pair). Other arguments go to `keras.Model.compile` (e.g. jit_compile)."""
    net = self.net
    masked = bool(net.masks)
    self.mask_optimizer = (mask_optimizer or adam(INIT_LR)) if masked else None
    if not masked and mask_optimizer is not None:
      raise UserError("mask_optimizer: the network has no masks (add_masks) to train.")
    optimizer = optimizer or adam(0.1 * INIT_LR if masked else BASE_LR)
    super().compile(optimizer=optimizer, **kwargs)
    optimizer.build(net.weight_variables)
    if masked:
      self.mask_optimizer.build(net.mask_variables)

  def fit(self, x=None, y=None, *args, **kwargs):
    if self.n_train is None:
      self.n_train = float(_count_examples(x, y))
    return super().fit(x, y, *args, **kwargs)


def _count_examples(x, y):
  if y is not None or not isinstance(x, tf.data.Dataset):
    return len(x)
  if x.cardinality() < 0:
    raise UserError("adversarial(..., n_train=None): the training set's size (N of the KL "
                    "term) cannot be counted on an infinite dataset; pass n_train.")
  return int(x.reduce(0, lambda n, batch: n + tf.shape(batch[0])[0]))


def paper_optimizers(total_steps, masked=True, decay=(0.5, 0.7)):
  """(weights' optimizer, masks' optimizer or None): the CLI's Adam with its staircase decay,
  x0.1 after `decay[0]` and x0.01 after `decay[1]` of `total_steps` (LeNet5's (0.5, 0.7);
  VGG-16's (0.5, 0.8))."""
  if not masked:
    return adam(staircase(BASE_LR, total_steps, decay)), None
  return (adam(staircase(0.1 * INIT_LR, total_steps, decay)),
          adam(staircase(INIT_LR, total_steps, decay)))


def adversarial(model, method="anp_vs", *, eps=None, step_size=None, steps=None, beta=None,
                lambda_vs=None, adv_weight=2.0, trades_beta=None, weight_decay=None, seed=0,
                n_train=None, defaults="mnist", compact_attack=True, clip=(0.0, 1.0)):
  """A `RobustModel` training `model` with one of the paper's methods.

  Args:
    model: a `MaskedModel` (`add_masks`; needed by bp, anp, anp_vs) or, for standard, at and
      trades, a plain Keras model (wrapped without masks). The CLI's networks
      (`models.lenet.LeNet5`, `models.vgg.VGG`, built) are MaskedNets too and train the same
      way.
    method: a method of `anp.methods` that works on any Keras model (standard, at, trades, bp,
      anp, anp_vs).
    eps, step_size, steps: the training L-inf PGD (radius, step, iterations).
    beta: weight of the masks' KL / N; lambda_vs: of the vulnerability V (at, anp_vs);
    adv_weight: w of (CE(x) + w CE(x_adv)) / (1 + w); trades_beta: TRADES' KL weight;
    weight_decay: of the L2 term. None takes the CLI's value for the data set `defaults`
      ('mnist', 'fashion_mnist', 'cifar10' or 'cifar100': eps 0.3 / 0.03, beta 4 / 2, ...).
    seed: every random draw of step t is a function of (seed, t) (None: unseeded).
    n_train: N of the KL term (None: counted on the first fit).
    compact_attack: craft the training PGD on `model.attack_fn()` (same logits).
    clip: the box [clip_min, clip_max] of the inputs.
  """
  if method not in methods.REGISTRY or not methods.get(method).keras_api:
    usable = [m for m in methods.METHODS if methods.get(m).keras_api]
    raise UserError(f"method: expected one of {', '.join(usable)} (the others need the CLI's "
                    f"own networks). Received: {method!r}")
  spec = methods.get(method)
  if not isinstance(model, MaskedNet):
    if spec.masked:
      raise UserError(f"method {method!r} prunes units: pass anp.add_masks(model).")
    model = add_masks(model, masked=False)
  elif model.masks and not spec.masked:
    raise UserError(f"method {method!r} trains no masks: pass the plain Keras model.")
  cfg = Config(dataset=defaults, method=method, seed=seed, eps=eps, step_size=step_size,
               train_attack_steps=steps, beta=beta, lambda_vs=lambda_vs, adv_weight=adv_weight,
               trades_beta=trades_beta, weight_decay=weight_decay,
               compact_attack=compact_attack, thres=model.threshold).resolved()
  robust = RobustModel(model, n_train=1.0, clip_min=clip[0], clip_max=clip[1],
                       **spec.trainer_args(cfg))
  robust.n_train = None if n_train is None else float(n_train)
  robust.settings = dataclasses.asdict(cfg)
  if isinstance(model, MaskedModel):  # built: BackupAndRestore needs it
    robust(tf.zeros((1,) + tuple(model.image_shape)))
  else:
    robust.built = model.built
  return robust
