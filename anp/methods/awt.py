"""AWT's ticket search (Shi et al., "Finding Dynamics Preserving Adversarial Winning Tickets",
AISTATS 2022), --method=awt, as an adversarial Neural Tangent Transfer.

The paper's method section was not available to us. AWT looks for a sparse subnetwork at
initialisation whose adversarial-training dynamics match the dense network's, through the
NTK; pruning is one-shot, unstructured, by least weight magnitude (the survey of Piras et al.
2024). We implement it as Neural Tangent Transfer (Liu & Zenke, "Finding trainable sparse
networks through Neural Tangent Transfer", ICML 2020) on PGD examples; every choice below that
is not NTT's is ours.

Teacher t: the dense network at the run's starting weights theta_0, frozen (a plain, unmasked
copy; `teacher_net`). Student s: the HYDRA `weight` network (`models.subnet`) with weights
theta, starting at theta_0, and mask m = per-layer top-k of |scores|. Per step on (x, y):

  x_adv = PGD on the teacher (the run's training attack, seeded start; ours: NTT has no
          attack, AWT's attacked network is not known to us)
  L = mean((f_s(x_adv) - f_t(x_adv))^2)                       logits, [B, C]
      + awt_kernel_weight * mean((Theta_s - Theta_t)^2)        [n, n], `projected_ntk`
      + awt_l2 / density * sum_l ||m_l * W_l||^2               masked kernels only

minimised over theta (kernels, biases; VGG's batch-norm gamma / beta too) by Adam at NTT's
5e-4, constant; the scores are not trained. Both networks run in inference mode (ours: no
dropout; VGG's batch norm uses its moving statistics, which the search does not update).
Every `remask_every` steps the scores are set to |W|, so the mask becomes the per-layer top-k
of |theta| and pruned weights (which keep their values) may come back; as NTT, no remask in
the last `remask_every` steps. The first mask is the top-k of |theta_0| (`AwtTrainer.start`).
The ticket (mask, transferred theta) is then adversarially trained by HYDRA's finetune stage.
"""

import keras
import tensorflow as tf

from anp.training import losses
from anp.methods.base import Method
from anp.training.model import AdversarialTrainer, adam, replica_loss
from anp.runs.rundir import build_net
from models.subnet import fixed_masks, hydra_masks, kernel_of, subnet_layers

# NTT's Adam learning rate of the transfer (LeNet-5 / MNIST demo), kept constant.
LEARNING_RATE = 5e-4


def teacher_net(cfg):
  """The dense teacher of an awt config: the same architecture, plain unmasked layers."""
  return build_net(cfg, masked=False)


def direction(seed, n_classes):
  """A random unit vector v [n_classes], stateless from `seed` (shape-[2]) when given."""
  v = (tf.random.normal([n_classes]) if seed is None
       else tf.random.stateless_normal([n_classes], seed))
  return v / tf.norm(v)


def per_example_gradients(fn, variables, x, v):
  """J [n, P]: row i is the gradient of v . fn(x[i:i+1]) over `variables`, flattened.

  fn: [b, ...] -> logits [b, C]; x [n, ...] with a static n; v [C]. One backward pass per
  example. Under an outer tape the rows are differentiable with respect to `variables`.
  """
  variables = [getattr(v, "value", v) for v in variables]  # Keras' variables: their tf ones
  rows = []
  for i in range(x.shape[0]):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(variables)
      logits = fn(x[i:i + 1])
      if logits.dtype in (tf.float16, tf.bfloat16):  # mixed precision: in float32
        logits = tf.cast(logits, tf.float32)
      out = tf.reduce_sum(logits * tf.cast(v, logits.dtype))
    grads = tape.gradient(out, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    rows.append(tf.concat([tf.reshape(g, [-1]) for g in grads], 0))
  return tf.stack(rows)


def projected_ntk(fn, variables, x1, x2, v):
  """Empirical NTK of the scalar output v . f: Theta [n1, n2], Theta[i, j] =
  <d(v . f(x1_i))/d theta, d(v . f(x2_j))/d theta>.

  Ours: a cheap estimator of the full-output NTK J(x1) J(x2)^T [n1, n2, C, C] that NTT
  matches; for v uniform on the unit sphere E_v[Theta] = trace over the outputs / C.
  x1 [n1, ...], x2 [n2, ...] with static sizes; v [C].
  """
  return tf.matmul(per_example_gradients(fn, variables, x1, v),
                   per_example_gradients(fn, variables, x2, v), transpose_b=True)


def _key(variable):
  return variable.path.split("/", 1)[1]  # without the model's own name


class AwtTrainer(AdversarialTrainer):
  """Trains the student `net` (HYDRA `weight` layers) towards the frozen dense `teacher`.

  Only `train_step` differs from `AdversarialTrainer`: validation (PGD on the student), seeds
  and metrics bookkeeping are the trainer's. The teacher gets the student's weights at
  construction and again in `start()` (after --init_from is loaded); a resumed run restores it
  from the checkpoint instead.

  kernel_weight, l2: the NTK and L2 weights (NTT: 1e-3, 1e-5); ntk_examples: examples of
  each half of the batch in the NTK; remask_every: steps between masks; total_steps: the
  run's, for the no-remask tail. Other keywords: `AdversarialTrainer`'s.
  """

  def __init__(self, net, teacher, *, kernel_weight=1e-3, l2=1e-5, ntk_examples=8,
               remask_every=100, total_steps=None, **kwargs):
    super().__init__(net, adversarial=True, **kwargs)
    if not subnet_layers(net):
      raise ValueError("AwtTrainer needs a network built with hydra='weight'.")
    self.teacher = teacher
    self.kernel_weight = float(kernel_weight)
    self.l2 = float(l2)
    self.ntk_examples = int(ntk_examples)
    self.remask_every = int(remask_every)
    # As NTT, the mask is last updated `remask_every` steps before the end.
    self.last_remask = (None if total_steps is None
                        else int(total_steps) - self.remask_every)
    names = ("loss", "ce_clean", "acc_clean", "ce_adv", "acc_adv", "awt_output_distance",
             "awt_ntk_distance")
    self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
    self._pairs = self._variable_pairs()
    self.start()

  def _variable_pairs(self):
    """(student variable, teacher variable) of every non-score variable, by path."""
    scores = {id(layer.scores) for layer in subnet_layers(self.net)}
    student = {_key(v): v for v in self.net.variables if id(v) not in scores}
    teacher = {_key(v): v for v in self.teacher.variables}
    if student.keys() != teacher.keys():
      raise ValueError(f"Expected a teacher with the student's variables. Received: "
                       f"{sorted(set(student) ^ set(teacher))} differ")
    return [(student[k], teacher[k]) for k in sorted(student)]

  def start(self):
    """A fresh run's start from the current weights theta_0: teacher := theta_0, the first mask
    := per-layer top-k of |theta_0|."""
    for s, t in self._pairs:
      t.assign(s)
    self.remask()

  def remask(self):
    """Scores := |W| per Subnet layer: the mask becomes the per-layer top-k of |theta|."""
    for layer in subnet_layers(self.net):
      layer.scores.assign(tf.abs(layer.kernel))
    return tf.constant(True)

  def _halves(self, x_adv):
    """(x1, x2): up to `ntk_examples` rows of each half of the batch (static sizes)."""
    b = x_adv.shape[0]
    half = b // 2 if b is not None else self.ntk_examples
    n = min(self.ntk_examples, half)
    return x_adv[:n], x_adv[half:half + n]

  def search_gradients(self, x_adv, v):
    """(gradients, stats) of the AWT loss on x_adv [B, ...] with the NTK direction v [C]:
    the gradients over `net.weight_variables` (of this replica's share of the loss), stats =
    loss, awt_output_distance, awt_ntk_distance and the student's logits_adv [B, C]."""
    net, teacher = self.net, self.teacher
    x1, x2 = self._halves(x_adv)

    def teacher_fn(t):
      return teacher(t, training=False)

    def student_fn(t):
      return net(t, training=False)

    target = tf.stop_gradient(tf.cast(teacher_fn(x_adv), tf.float32))
    target_ntk = tf.stop_gradient(projected_ntk(teacher_fn, teacher.weight_variables, x1, x2, v))
    weights = net.weight_variables
    with tf.GradientTape() as tape:
      logits_adv = tf.cast(student_fn(x_adv), tf.float32)
      output_distance = tf.reduce_mean(tf.square(logits_adv - target))
      ntk_distance = tf.reduce_mean(tf.square(
          projected_ntk(student_fn, weights, x1, x2, v) - target_ntk))
      l2 = tf.add_n([tf.reduce_sum(tf.square(kernel_of(layer)))
                     for layer in subnet_layers(net)])
      loss = (output_distance + self.kernel_weight * ntk_distance
              + self.l2 / (1.0 - net.prune_ratio) * l2)
      objective = replica_loss(loss, self.optimizer)
    return tape.gradient(objective, weights), dict(
        loss=loss, awt_output_distance=output_distance, awt_ntk_distance=ntk_distance,
        logits_adv=logits_adv)

  def train_step(self, data):
    x, y = data
    net = self.net
    attack_seed, v_seed = self.step_seeds(self.optimizer.iterations, 2)
    x_adv = tf.stop_gradient(
        self.make_adversarial(x, y, attack_seed, self.objective.craft, net=self.teacher,
                              dtype=self.attack_dtype))
    v = direction(v_seed, int(net.n_classes))
    with fixed_masks(net, hydra_masks(net)):  # the scores do not move within a step
      logits = net(x, training=False)
      grads, stats = self.search_gradients(x_adv, v)
    self.optimizer.apply(grads, net.weight_variables)
    it = self.optimizer.iterations  # after the update: step + 1
    due = tf.equal(it % self.remask_every, 0)
    if self.last_remask is not None:
      due = tf.logical_and(due, it <= self.last_remask)
    tf.cond(due, self.remask, lambda: tf.constant(False))
    logits_adv = stats.pop("logits_adv")
    return self._record(
        ce_clean=losses.cross_entropy(y, logits), acc_clean=losses.accuracy(y, logits),
        ce_adv=losses.cross_entropy(y, logits_adv), acc_adv=losses.accuracy(y, logits_adv),
        **stats)


class AWT(Method):
  """AWT's ticket search; its ticket (mask, weights) is finetuned by HYDRA's finetune stage."""

  name, title = "awt", "AWT search"
  run_keys = ("prune_ratio", "awt_kernel_weight", "awt_l2", "awt_ntk_examples",
              "awt_remask_every")
  ticket, ticket_label = "weight_mask", "AWT"

  def validate(self, cfg, need):
    need(cfg.batch_size >= 2, "batch_size", "an integer >= 2 with --method=awt (its NTK "
         "pairs the two halves of a batch)", cfg.batch_size)

  def net_options(self, cfg):
    return dict(masked=False, hydra="weight", prune_ratio=cfg.prune_ratio)

  def make_trainer(self, net, cfg, n_train, total_steps, wrap):
    """A frozen dense teacher, one Adam (NTT's constant 5e-4) over the student's weights,
    not its scores."""
    weight_opt = wrap(adam(LEARNING_RATE))
    weight_opt.build(net.weight_variables)
    trainer = AwtTrainer(
        net, teacher_net(cfg), kernel_weight=cfg.awt_kernel_weight, l2=cfg.awt_l2,
        ntk_examples=cfg.awt_ntk_examples, remask_every=cfg.awt_remask_every,
        total_steps=total_steps, n_train=n_train, eps=cfg.eps, step_size=cfg.step_size,
        attack_steps=cfg.train_attack_steps, seed=cfg.seed, compact_attack=cfg.compact_attack,
        attack_dtype=cfg.train_attack_dtype)
    trainer.compile(optimizer=weight_opt, jit_compile=cfg.jit_compile)
    return trainer

  def start(self, trainer, cfg):
    trainer.start()  # the teacher and the first mask from the starting weights

  def checkpoint_objects(self, trainer):
    return dict(teacher=trainer.teacher)
