"""The Keras model that trains a (masked) network by ANP-VS and its baselines."""

import keras
import tensorflow as tf

from anp.training import losses
from anp.training.objectives import MixedCE


def staircase(init_lr, total_steps, fractions):
  """lr, x0.1 after `fractions[0]` of training, x0.01 after `fractions[1]` (original)."""
  boundaries = [max(1, int(total_steps * r)) for r in fractions]
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries, [init_lr, init_lr * 0.1, init_lr * 0.01])


def adam(learning_rate):
  # epsilon=1e-8 as tf.compat.v1.train.AdamOptimizer in the original.
  return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)


def replica_loss(loss, optimizer):
  """The loss one replica differentiates: `loss` / R under a strategy of R replicas in sync.

  `loss` is this replica's (mean over its rows of the global batch, plus the global beta KL / N,
  wd L2 terms). The optimizers sum the replicas' gradients (Keras all-reduces them), so the
  sum of the R scaled losses is the global batch mean, and KL / N and L2, which every replica
  computes whole, count once. With one replica (--strategy=default) the loss is untouched.
  `optimizer.scale_loss` applies a LossScaleOptimizer's scale (mixed_float16), else is the
  identity.
  """
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  if replicas > 1:
    loss = loss / replicas
  return optimizer.scale_loss(loss)


class AdversarialTrainer(keras.Model):
  """Wraps a `MaskedNet` and trains it with one of the paper's methods.

  Each method (`anp.methods`) sets the trainer's arguments:

  method   clean CE  PGD CE  masks  vulnerability suppression
  standard    x
  at          x        x               lambda_vs (the original's AT: 1e-4; 0: Madry et al.)
  trades      x     KL(x, x_adv)
  bp          x               x
  anp         x        x      x
  anp_vs      x        x      x        x
  at_bnn            x (only)          Bayesian weights (Adv-BNN, `SampledCE`)
  hydra       x    PGD CE / KL         (HYDRA's scores / weights by stage: `trained_variables`)
  admm              x (only)          ADMM's penalty (`regularizer`, anp.methods.admm; `AdvCE`)
  awt         (AWT's search: distances to a dense teacher on its PGD examples, anp.methods.awt)

  Weights minimise
    D + beta KL / N + wd L2 + lambda V(x, x_adv)
  (x_adv only with `adversarial`; the V term when `lambda_vs` > 0), where the data term D is
  the `objective`'s: (CE(x) + w CE(x_adv)) / (1 + w) by default (`anp.training.objectives.MixedCE`),
  CE(x) + beta_t KL(f(x) || f(x_adv)) for TRADES (`Trades`), CE(x) alone without adversarial
  examples, CE(x_adv) for ADMM (`AdvCE`) and Adv-BNN, whose KL is that of its Bayesian layers
  (weight decay skips their log-sigmas). The mask parameters
  minimise, with their own optimizer, CE(x_adv) + beta KL / N (CE(x) for bp), as in the
  original code.
  `regularizer` (a function () -> scalar, e.g. ADMM's rho/2 ||W - Z + U||^2) is added to the
  weights' loss. x_adv is made by L-inf PGD on the network in inference mode, outside the tape.
  The clean and adversarial passes each draw their own per-example masks, and their
  latent features also give V (the original runs two more passes for V).

  With `seed` (an int) every random draw of step t (the PGD start, both passes' masks and
  dropout) is a pure function of (seed, t), t being the optimizer's step counter, which is
  checkpointed: a resumed run repeats an uninterrupted one bit for bit on CPU.
  """

  admm = None  # ADMM's state (`anp.methods.admm.ADMMState`), set by its `make_trainer`

  def __init__(self, net, *, n_train, adversarial=True, eps=0.3, step_size=0.01,
               attack_steps=20, adv_weight=2.0, beta=1.0, lambda_vs=0.0, weight_decay=1e-4,
               clip_min=0.0, clip_max=1.0, mask_optimizer=None, seed=None, compact_attack=True,
               attack_dtype="float32", objective=None, trained_variables=None, regularizer=None,
               **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.adversarial = bool(adversarial)
    self.use_vs = self.adversarial and lambda_vs > 0
    self.n_train = float(n_train)
    self.attack_args = dict(eps=eps, step_size=step_size, steps=attack_steps,
                            clip_min=clip_min, clip_max=clip_max)
    self.objective = objective or MixedCE(adv_weight)
    self.beta = float(beta)
    self.lambda_vs = float(lambda_vs)
    self.weight_decay = float(weight_decay)
    self.mask_optimizer = mask_optimizer
    self.seed = None if seed is None else int(seed)
    self.compact_attack = bool(compact_attack)
    self.attack_dtype = tf.as_dtype(attack_dtype)  # of the training attack only
    # (weight optimizer's, mask optimizer's) variables: by default the weights and the
    # beta-Bernoulli mask parameters; a HYDRA stage trains its own set with one optimizer.
    self.trained_variables = trained_variables
    self.regularizer = regularizer
    names = ["loss", "ce_clean", "acc_clean"]
    if self.adversarial:
      names += ["ce_adv", "acc_adv", "vulnerability", *self.objective.extra_metrics]
    if net.has_kl:
      names += ["kl"]
    self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def call(self, x, training=False):
    return self.net(x, training=training)

  def make_adversarial(self, x, y, seed=None, craft=None, net=None, dtype=tf.float32):
    """Adversarial examples of `craft(model_fn, x, y, seed, attack_args)` (an objective's),
    by default the objective's validation attack (PGD on the cross-entropy); `seed`
    (shape-[2] ints) fixes the random start (and a Bayesian network's weight samples).

    With `compact_attack` the attack runs on `net.attack_fn()` (the inference-mode network
    without its pruned units, equal up to float rounding), else through the masked layers.
    `net`: the attacked network, by default the trained one (AWT attacks its teacher).
    `dtype`: of the compact function's passes (`LeNet5.attack_fn`); train_step passes
    `attack_dtype`, validation keeps float32.
    """
    if seed is not None:  # the attacks take one integer seed
      seed = tf.random.stateless_uniform([], seed, minval=None, maxval=None, dtype=tf.int64)
    net = self.net if net is None else net
    model_fn = (net.attack_fn(dtype) if self.compact_attack
                else lambda t, **kw: net(t, training=False, **kw))
    return (craft or self.objective.attack)(model_fn, x, y, seed, self.attack_args)

  def step_seeds(self, counter, n):
    """`n` shape-[2] seeds drawn from (seed, counter), or `n` Nones without a seed."""
    if self.seed is None:
      return [None] * n
    pair = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(counter, tf.int64)])
    return tf.unstack(tf.random.experimental.stateless_split(pair, n))

  def _variables(self):
    if self.trained_variables is not None:
      return self.trained_variables
    return self.net.weight_variables, self.net.mask_variables

  def _record(self, **values):
    for name, value in values.items():
      if name in self.trackers:
        self.trackers[name].update_state(value)
    return {name: self.trackers[name].result() for name in values if name in self.trackers}

  def train_step(self, data):
    x, y = data
    attack_seed, clean_seed, adv_seed = self.step_seeds(self.optimizer.iterations, 3)
    x_adv = (tf.stop_gradient(self.make_adversarial(
        x, y, attack_seed, self.objective.craft, dtype=self.attack_dtype))
             if self.adversarial else None)
    net = self.net
    weights, mask_vars = self._variables()
    with tf.GradientTape(persistent=bool(mask_vars)) as tape:
      logits, feats = net(x, training=True, return_features=True, seed=clean_seed)
      ce_clean = losses.cross_entropy(y, logits)
      stats = dict(ce_clean=ce_clean, acc_clean=losses.accuracy(y, logits))
      data_loss = mask_data_loss = ce_clean
      if self.adversarial:
        logits_adv, feats_adv = net(x_adv, training=True, return_features=True,
                                    seed=adv_seed)
        ce_adv = losses.cross_entropy(y, logits_adv)
        vul = losses.vulnerability(feats, feats_adv)
        data_loss, extra = self.objective.data_loss(y, logits, logits_adv, ce_clean, ce_adv)
        mask_data_loss = ce_adv
        stats.update(ce_adv=ce_adv, acc_adv=losses.accuracy(y, logits_adv),
                     vulnerability=vul, **extra)
      kl_term = self.beta * net.kl() / self.n_train
      # Decay: what a HYDRA stage trains, else the weights but a Bayesian net's log-sigmas.
      decayed = weights if self.trained_variables is not None else net.decayed_variables
      loss = data_loss + kl_term + self.weight_decay * losses.l2_penalty(decayed)
      if self.use_vs:
        loss += self.lambda_vs * vul
      if self.regularizer is not None:
        loss += self.regularizer()
      mask_loss = mask_data_loss + kl_term
      # What this replica differentiates (the losses themselves on one device).
      weight_objective = replica_loss(loss, self.optimizer)
      mask_objective = replica_loss(mask_loss, self.mask_optimizer) if mask_vars else None
    self.optimizer.apply(tape.gradient(weight_objective, weights), weights)
    if mask_vars:
      self.mask_optimizer.apply(tape.gradient(mask_objective, mask_vars), mask_vars)
    if net.has_kl:
      stats["kl"] = net.kl()
    del tape
    return self._record(loss=loss, **stats)

  def test_step(self, data):
    return self._record(**self.evaluate_batch(*data))

  def evaluate_batch(self, x, y, seed=None):
    """Batch means of the validation metrics in inference mode; `seed` fixes the PGD start
    (and the weight sample of a Bayesian network, the same for x and x_adv)."""
    infer = {} if seed is None else dict(seed=tf.random.experimental.stateless_fold_in(seed, 1))
    logits, feats = self.net(x, training=False, return_features=True, **infer)
    stats = dict(ce_clean=losses.cross_entropy(y, logits),
                 acc_clean=losses.accuracy(y, logits), kl=self.net.kl())
    if self.adversarial:
      x_adv = self.make_adversarial(x, y, seed)
      logits_adv, feats_adv = self.net(x_adv, training=False, return_features=True, **infer)
      stats.update(ce_adv=losses.cross_entropy(y, logits_adv),
                   acc_adv=losses.accuracy(y, logits_adv),
                   vulnerability=losses.vulnerability(feats, feats_adv))
    return stats
