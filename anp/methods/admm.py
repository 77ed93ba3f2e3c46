"""--method=admm: robustness-aware ADMM pruning (Ye et al., "Adversarial Robustness vs. Model
Compression, or Both?", ICCV 2019, arXiv 1903.12561).

Scaled-form ADMM for min f_adv(W) s.t. card(W_l) <= k_l, per prunable kernel W_l:
  W-step: adversarial training on f_adv(W) + rho/2 * sum_l ||W_l - Z_l + U_l||_F^2
  Z-step: Z_l <- project(W_l + U_l, keep)    (exact per-layer top-k by magnitude)
  U-step: U_l <- U_l + W_l - Z_l
with rho multiplied by `rho_growth` (1.3) just before every Z/U update, from rho0 = 1e-3.

`--method=admm` is the ADMM stage: CE(x_adv) on PGD-CE examples, as the authors' adv_main.py
(`anp.training.objectives.AdvCE`; PGD-40 and weight decay 1e-6 by default on MNIST, their
settings), or with --admm_loss=mixed the loss of `--method=at` (mixed with the clean CE by
--adv_weight, no vulnerability term), plus `ADMMState.penalty` on every conv and dense kernel,
Z and U updated every --admm_every epochs (`end_of_epoch`), the state kept in the run's
checkpoints. Its hard
pruning and masked retraining is HYDRA's finetune stage with magnitude scores
(`--method=hydra --hydra_stage=finetune --hydra_scores=magnitude --hydra_objective=adv
--init_from=<admm run>`, same --prune_ratio): per-layer top-k of |W| = the Z projection.
"""
import tensorflow as tf

from anp.methods.base import Method
from models.walk import sublayers


def project(w, keep):
  """Keeps the `keep` largest-|w| entries of `w` (any shape), zeros the rest.

  Args:
    w: tensor of any shape, n entries.
    keep: int in [0, n].
  Returns: tensor shaped like `w`, exactly `keep` entries taken from `w` (ties broken by
    index order of tf.math.top_k).
  """
  flat = tf.reshape(w, [-1])
  n = flat.shape[0]
  if not 0 <= keep <= n:
    raise ValueError(f"Expected 0 <= keep <= {n}. Received: keep={keep}")
  if keep == 0:
    return tf.zeros_like(w)
  _, idx = tf.math.top_k(tf.abs(flat), k=keep)
  mask = tf.scatter_nd(idx[:, None], tf.ones([keep], flat.dtype), [n])
  return tf.reshape(flat * mask, tf.shape(w))


def keep_count(n, prune_ratio):
  """Number of entries kept out of `n` at `prune_ratio` in [0, 1)."""
  if not 0.0 <= prune_ratio < 1.0:
    raise ValueError(f"Expected 0 <= prune_ratio < 1. Received: prune_ratio={prune_ratio}")
  return max(1, int(round(n * (1.0 - prune_ratio))))


class ADMMState:
  """Non-trainable Z, U per kernel and a scalar rho (tf.Variables; `checkpoint()` saves them).

  Args:
    kernels: list of kernel tf.Variables W_l (Conv2D (kh, kw, C_in, C_out), Dense (in, out)).
    prune_ratio: fraction of each kernel to prune (per layer).
    rho: initial rho (paper code: 1e-3).
    rho_growth: factor applied to rho at every update (paper code: 1.3).
  """

  def __init__(self, kernels, prune_ratio, rho=1e-3, rho_growth=1.3):
    self.kernels = list(kernels)
    self.keeps = [keep_count(int(tf.size(w)), prune_ratio) for w in self.kernels]
    self.rho_growth = rho_growth
    self.rho = tf.Variable(rho, trainable=False, dtype=tf.float32, name="rho")
    self.z = [tf.Variable(project(w, k), trainable=False, name="z")
              for w, k in zip(self.kernels, self.keeps)]
    self.u = [tf.Variable(tf.zeros_like(w), trainable=False, name="u") for w in self.kernels]

  def checkpoint(self):
    """rho, Z and U as a checkpointable object (the kernels are saved with the network)."""
    return tf.train.Checkpoint(rho=self.rho, z=self.z, u=self.u)

  def reset(self):
    """Z <- project(W), U <- 0: the start of ADMM from the current (e.g. pretrained) W."""
    for w, z, u, k in zip(self.kernels, self.z, self.u, self.keeps):
      z.assign(project(w, k))
      u.assign(tf.zeros_like(u))

  def penalty(self):
    """rho/2 * sum_l ||W_l - Z_l + U_l||_F^2 (scalar); gradient flows to the kernels only."""
    return 0.5 * self.rho * tf.add_n(
        [tf.reduce_sum(tf.square(w - z + u)) for w, z, u in zip(self.kernels, self.z, self.u)])

  def update(self):
    """rho <- growth * rho; Z <- project(W + U); U <- U + W - Z."""
    self.rho.assign(self.rho * self.rho_growth)
    for w, z, u, k in zip(self.kernels, self.z, self.u, self.keeps):
      z.assign(project(w + u, k))
      u.assign(u + w - z)

  def gaps(self):
    """Per-layer ||W - Z||_F / ||W||_F (should shrink toward 0 during the ADMM stage)."""
    return [float(tf.norm(w - z) / (tf.norm(w) + 1e-12)) for w, z in zip(self.kernels, self.z)]


def kernels(net):
  """The kernels ADMM prunes: every conv and dense layer's (HYDRA's Subnet layers' too), in
  `sublayers` order (that of the checkpointed Z and U)."""
  return [layer.kernel for layer in sublayers(net)
          if hasattr(layer, "kernel") and layer.kernel.shape.rank in (2, 4)]


def end_of_epoch(state, epoch, every):
  """The train log's ADMM entries of epoch `epoch` (1-based): rho and the per-layer residual
  ||W - Z|| / ||W|| before this epoch's update; Z and U are updated when `epoch` is a
  multiple of `every`."""
  record = dict(admm_rho=float(state.rho.numpy()), admm_residual=state.gaps())
  if epoch % every == 0:
    state.update()
  return record


# Epochs between Z/U updates: the ADMM code's MNIST config (40 ADMM epochs, every 4), and 20
# on CIFAR.
ADMM_EVERY = {"mnist": 4, "fashion_mnist": 4, "cifar10": 20, "cifar100": 20}


class ADMM(Method):
  """The ADMM stage: the data term of --admm_loss plus `ADMMState.penalty`, Z and U updated
  every --admm_every epochs, rho, Z and U checkpointed with the run."""

  name, title = "admm", "ADMM (before hard pruning)"
  run_keys = ("prune_ratio", "admm_rho", "admm_every", "admm_loss")
  legacy = dict(admm_loss="mixed")  # runs saved before --admm_loss used the mixed loss
  adv_weight_decay = 1e-6  # the ADMM code's SGD weight decay of the ADMM stage
  ticket, ticket_label = "magnitude", "ADMM"

  def resolve(self, cfg):
    if cfg.admm_every is None:
      cfg.admm_every = ADMM_EVERY[cfg.dataset]

  def data_term(self, cfg):
    return cfg.admm_loss

  def make_trainer(self, net, cfg, n_train, total_steps, wrap, **kwargs):
    state = ADMMState(kernels(net), cfg.prune_ratio, cfg.admm_rho)
    trainer = super().make_trainer(net, cfg, n_train, total_steps, wrap,
                                   regularizer=state.penalty, **kwargs)
    trainer.admm = state
    return trainer

  def start(self, trainer, cfg):
    trainer.admm.reset()  # Z from the starting weights

  def checkpoint_objects(self, trainer):
    return dict(admm=trainer.admm.checkpoint())

  def end_of_epoch(self, trainer, cfg, epoch):
    return end_of_epoch(trainer.admm, epoch, cfg.admm_every)
