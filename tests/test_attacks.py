"""Tests of the `attacks` package on tiny models (a fixed linear classifier, a small trained
MLP, a small conv net) and a synthetic, well separated 10-class problem of 8x8x1 images."""

import functools

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import attacks
from attacks import losses

N_CLASSES = 10


@functools.lru_cache(maxsize=None)
def prototypes():
  return np.random.RandomState(0).uniform(0.2, 0.8, (N_CLASSES, 64)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def toy_data(n, seed):
  """x [n, 8, 8, 1] in [0, 1]: a class prototype plus noise; y int64 [n]."""
  rng = np.random.RandomState(seed)
  y = rng.randint(0, N_CLASSES, n)
  x = np.clip(prototypes()[y] + rng.normal(0, 0.15, (n, 64)), 0, 1).astype(np.float32)
  return x.reshape(n, 8, 8, 1), y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def linear_model():
  """Nearest-prototype classifier with known weights: logits_c = 10 (x.mu_c - |mu_c|^2 / 2)."""
  mu = prototypes()
  model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(N_CLASSES)])
  model.layers[-1].set_weights([10 * mu.T, -5 * (mu ** 2).sum(1)])
  return model


@functools.lru_cache(maxsize=None)
def trained_mlp():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(64, activation="relu"),
                            keras.layers.Dense(N_CLASSES)])
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = toy_data(4000, 1)
  model.fit(x, y, batch_size=128, epochs=5, verbose=0)
  return model


@functools.lru_cache(maxsize=None)
def conv_model():
  keras.utils.set_random_seed(1)
  return keras.Sequential([keras.Input((8, 8, 3)),
                           keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(N_CLASSES)])


def accuracy(model_fn, x, y):
  return float(tf.reduce_mean(tf.cast(attacks.correct(model_fn, x, y), tf.float32)))


def mean_ce(model_fn, x, y):
  return float(tf.reduce_mean(losses.cross_entropy(model_fn(x), y)))


# L-inf attacks as (model_fn, x, y, eps, **kwargs) -> x_adv.
LINF_ATTACKS = {
    "pgd_ce": lambda m, x, y, eps, **kw: attacks.pgd(m, x, y, eps, eps / 4, 10, **kw),
    "pgd_cw": lambda m, x, y, eps, **kw: attacks.pgd(m, x, y, eps, eps / 4, 10, loss="cw",
                                                     **kw),
    "fgsm": lambda m, x, y, eps, seed=None, **kw: attacks.fgsm(m, x, y, eps, **kw),
    "apgd_ce": lambda m, x, y, eps, **kw: attacks.apgd(m, x, y, eps, 10, **kw),
    "apgd_dlr": lambda m, x, y, eps, **kw: attacks.apgd(m, x, y, eps, 10, loss="dlr", **kw),
}
LINF_PARAMS = [dict(testcase_name=name, name=name) for name in LINF_ATTACKS]


class CountingModel:
  """model_fn counting its calls in a variable (works eagerly and in graphs)."""

  def __init__(self, model):
    self.model = model
    self.calls = tf.Variable(0, dtype=tf.int32, trainable=False)

  def __call__(self, x):
    with tf.control_dependencies([self.calls.assign_add(1)]):
      return self.model(x)


class LossesTest(tf.test.TestCase):

  def test_values_on_known_logits(self):
    logits = tf.constant([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    y = tf.constant([0, 1])
    self.assertAllClose(losses.cw_margin(logits, y), [2.0, -1.0])
    self.assertAllClose(losses.dlr(logits, y), [1.0, -0.5])
    expected = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    self.assertAllClose(losses.cross_entropy(logits, y), expected)

  def test_dlr_is_shift_and_scale_invariant(self):
    logits = tf.random.stateless_normal([8, 10], [1, 2])
    y = tf.range(8) % 10
    self.assertAllClose(losses.dlr(3.0 * logits + 7.0, y), losses.dlr(logits, y), atol=1e-5)

  def test_dlr_needs_three_classes(self):
    with self.assertRaisesRegex(ValueError, "at least 3 classes"):
      losses.dlr(tf.zeros([4, 2]), tf.zeros([4], tf.int32))
    self.assertEqual(losses.dlr(tf.constant([[0.0, 1.0, 2.0]]), [0]).shape, [1])

  def test_unknown_loss(self):
    with self.assertRaisesRegex(ValueError, "Expected loss in"):
      losses.get("hinge")


class LossGradientTest(tf.test.TestCase):

  def _scaled_model(self):
    """logits = [c * sum(x), 0] with c = 1, 2, 3, ... on successive calls."""
    calls = tf.Variable(0.0, trainable=False)

    def model_fn(x):
      c = calls.assign_add(1.0)
      s = c * tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), 1, keepdims=True)
      return tf.concat([s, tf.zeros_like(s)], 1)

    return model_fn, calls

  def test_eot_averages_gradients_eagerly_and_in_graph(self):
    x = tf.ones([3, 2, 2, 1])
    y = tf.zeros([3], tf.int32)
    first_logit = lambda logits, y: logits[:, 0]
    for wrap in (lambda f: f, tf.function):
      model_fn, calls = self._scaled_model()
      loss, grad = wrap(lambda: attacks.loss_gradient(model_fn, x, y, first_logit, 4))()
      # Samples with c = 1, 2, 3, 4: mean gradient 2.5, mean loss 2.5 * 4.
      self.assertAllClose(grad, 2.5 * np.ones([3, 2, 2, 1]))
      self.assertAllClose(loss, [10.0, 10.0, 10.0])
      self.assertEqual(int(calls.numpy()), 4)

  def test_gradient_matches_closed_form_for_linear_model(self):
    model = linear_model()
    x, y = toy_data(8, 3)
    _, grad = attacks.loss_gradient(model, x, y, "ce")
    w, _ = model.layers[-1].get_weights()
    p = tf.nn.softmax(model(x))
    expected = (p - tf.one_hot(y, N_CLASSES)) @ w.T
    self.assertAllClose(tf.reshape(grad, [8, -1]), expected, atol=1e-4)

  def test_non_differentiable_model_raises(self):
    model_fn = lambda x: tf.one_hot(tf.zeros([tf.shape(x)[0]], tf.int32), 3)
    with self.assertRaisesRegex(ValueError, "no gradient"):
      attacks.loss_gradient(model_fn, tf.zeros([2, 4]), tf.zeros([2], tf.int32))


class AttackConstraintsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      [dict(testcase_name=f"{name}_{box}_{dt}", name=name, box=box, label_dtype=dt)
       for name in LINF_ATTACKS for box in ("unit", "signed", "tensor")
       for dt in ("int32", "int64")])
  def test_linf_shape_ball_and_box(self, name, box, label_dtype):
    clip_min, clip_max = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0),
                          "tensor": (tf.constant(0.25), tf.constant(0.75))}[box]
    lo, hi = float(clip_min), float(clip_max)
    rng = np.random.RandomState(0)
    x = tf.constant(lo + (hi - lo) * rng.uniform(size=(5, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.randint(0, N_CLASSES, 5), label_dtype)
    eps = 0.3
    x_adv = LINF_ATTACKS[name](conv_model(), x, y, eps, clip_min=clip_min, clip_max=clip_max,
                               seed=0)
    self.assertEqual(x_adv.shape, x.shape)
    self.assertEqual(x_adv.dtype, tf.float32)
    delta = np.abs(x_adv.numpy() - x.numpy())
    self.assertLessEqual(delta.max(), eps + 1e-6)
    self.assertGreater(delta.max(), 0.5 * eps)  # it moved
    self.assertGreaterEqual(x_adv.numpy().min(), lo)
    self.assertLessEqual(x_adv.numpy().max(), hi)
    # eps is large for the box: some coordinates must sit on a bound.
    self.assertTrue(np.any(x_adv.numpy() == lo) or np.any(x_adv.numpy() == hi))

  @parameterized.named_parameters(("unit", 0.0, 1.0), ("signed", -1.0, 1.0))
  def test_l2_shape_ball_and_box(self, lo, hi):
    rng = np.random.RandomState(0)
    x = tf.constant(lo + (hi - lo) * rng.uniform(size=(5, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.randint(0, N_CLASSES, 5))
    eps = 1.5
    x_adv = attacks.l2_pgd(conv_model(), x, y, eps, 0.5, 10, clip_min=lo, clip_max=hi, seed=0)
    self.assertEqual(x_adv.shape, x.shape)
    self.assertEqual(x_adv.dtype, tf.float32)
    norms = np.sqrt(((x_adv.numpy() - x.numpy()) ** 2).reshape(5, -1).sum(1))
    self.assertAllLessEqual(norms, eps + 1e-5)
    self.assertAllGreater(norms, 0.5 * eps)
    self.assertGreaterEqual(x_adv.numpy().min(), lo)
    self.assertLessEqual(x_adv.numpy().max(), hi)

  @parameterized.named_parameters(LINF_PARAMS)
  def test_box_wins_when_x_is_outside_it(self, name):
    x, y = toy_data(16, 3)  # in [0, 1], partly outside the box
    x_adv = LINF_ATTACKS[name](linear_model(), x, y, 0.05, clip_min=0.3, clip_max=0.6,
                               seed=0).numpy()
    self.assertGreaterEqual(x_adv.min(), 0.3)
    self.assertLessEqual(x_adv.max(), 0.6)
    inside = (x >= 0.3) & (x <= 0.6)
    self.assertLessEqual(np.abs(x_adv - x)[inside].max(), 0.05 + 1e-6)

  def test_no_box_when_clip_is_none(self):
    x = tf.ones([4, 8, 8, 1])
    y = tf.constant([0, 1, 2, 3])
    x_adv = attacks.fgsm(linear_model(), x, y, 0.2, clip_min=None, clip_max=None)
    self.assertGreater(float(tf.reduce_max(x_adv)), 1.0)
    self.assertAllClose(tf.abs(x_adv - x), 0.2 * tf.ones_like(x))

  @parameterized.named_parameters(("pgd", attacks.pgd), ("l2_pgd", attacks.l2_pgd))
  def test_zero_steps_without_random_start_returns_x(self, attack):
    x, y = toy_data(16, 3)
    x_adv = attack(linear_model(), x, y, 0.3, 0.1, 0, rand_init=False)
    self.assertAllEqual(x_adv, x)

  def test_zero_steps_random_start_is_in_ball(self):
    x, y = toy_data(16, 3)
    x_adv = attacks.pgd(linear_model(), x, y, 0.1, 0.1, 0, seed=3).numpy()
    delta = np.abs(x_adv - x)
    self.assertLessEqual(delta.max(), 0.1 + 1e-6)
    self.assertGreater(delta.mean(), 0.02)  # uniform in [-0.1, 0.1], then clipped
    # Seeded starts are reproducible; a different seed gives another start.
    self.assertAllEqual(attacks.pgd(linear_model(), x, y, 0.1, 0.1, 0, seed=3), x_adv)
    self.assertNotAllClose(attacks.pgd(linear_model(), x, y, 0.1, 0.1, 0, seed=4), x_adv)

  def test_fgsm_is_one_signed_step(self):
    model = linear_model()
    x, y = toy_data(16, 3)
    _, grad = attacks.loss_gradient(model, x, y)
    expected = np.clip(x + 0.05 * np.sign(grad.numpy()), 0, 1)
    self.assertAllClose(attacks.fgsm(model, x, y, 0.05), expected)


class AttackStrengthTest(tf.test.TestCase, parameterized.TestCase):

  def test_models_are_accurate(self):
    x, y = toy_data(500, 2)
    self.assertGreater(accuracy(linear_model(), x, y), 0.98)
    self.assertGreater(accuracy(trained_mlp(), x, y), 0.98)

  @parameterized.named_parameters(("ce", "ce"), ("cw", "cw"))
  def test_pgd_raises_loss_and_lowers_accuracy(self, loss):
    model = trained_mlp()
    x, y = toy_data(500, 2)
    x_adv = tf.function(lambda: attacks.pgd(model, x, y, 0.15, 0.03, 20, loss=loss,
                                            seed=0))()
    self.assertGreater(mean_ce(model, x_adv, y), mean_ce(model, x, y) + 1.0)
    loss_fn = losses.get(loss)
    self.assertGreater(float(tf.reduce_mean(loss_fn(model(x_adv), y))),
                       float(tf.reduce_mean(loss_fn(model(x), y))))
    self.assertLess(accuracy(model, x_adv, y), accuracy(model, x, y) - 0.5)

  @parameterized.named_parameters(
      LINF_PARAMS + [dict(testcase_name="l2_pgd", name="l2_pgd")])
  def test_large_eps_fools_everything(self, name):
    model = linear_model()
    x, y = toy_data(200, 2)
    if name == "l2_pgd":
      attack = lambda: attacks.l2_pgd(model, x, y, 4.0, 1.0, 20, seed=0)
    else:
      attack = lambda: LINF_ATTACKS[name](model, x, y, 1.0, seed=0)
    # One step from confident, saturated logits leaves a few examples to FGSM.
    self.assertLessEqual(accuracy(model, tf.function(attack)(), y),
                         0.1 if name == "fgsm" else 0.02)

  def test_l2_pgd_lowers_accuracy(self):
    model = trained_mlp()
    x, y = toy_data(500, 2)
    x_adv = attacks.l2_pgd(model, x, y, 1.0, 0.25, 10, seed=0)
    self.assertGreater(mean_ce(model, x_adv, y), mean_ce(model, x, y))
    self.assertLess(accuracy(model, x_adv, y), accuracy(model, x, y) - 0.1)

  def test_apgd_is_not_weaker_than_pgd(self):
    model = trained_mlp()
    x, y = toy_data(500, 2)
    eps, steps = 0.12, 20
    run = lambda f: accuracy(model, tf.function(f)(), y)
    acc_pgd = run(lambda: attacks.pgd(model, x, y, eps, eps / 4, steps, seed=0))
    acc_pgd_small_step = run(lambda: attacks.pgd(model, x, y, eps, eps / 40, steps, seed=0))
    acc_apgd = run(lambda: attacks.apgd(model, x, y, eps, steps, seed=0))
    acc_apgd_dlr = run(lambda: attacks.apgd(model, x, y, eps, steps, loss="dlr", seed=0))
    self.assertBetween(acc_pgd, 0.1, 0.9)  # the comparison is not vacuous
    self.assertLessEqual(acc_apgd, acc_pgd + 0.02)
    self.assertLessEqual(acc_apgd_dlr, acc_pgd + 0.02)
    # A badly tuned fixed step (steps * step_size = eps / 2) is clearly weaker than APGD.
    self.assertLess(acc_apgd, acc_pgd_small_step - 0.2)

  def test_apgd_step_size_halving_converges(self):
    # Loss -|x - c|^2 with c inside the ball: fixed signed steps of 2 eps oscillate, APGD's
    # halved step sizes bring its best point close to c.
    rng = np.random.RandomState(0)
    x = tf.constant(rng.uniform(0.3, 0.7, (6, 16)), tf.float32)
    eps = 0.2
    c = x + tf.constant(rng.uniform(-0.5 * eps, 0.5 * eps, (6, 16)), tf.float32)
    model_fn = lambda t: -tf.reduce_sum(tf.square(t - c), 1, keepdims=True)
    y = tf.zeros([6], tf.int32)  # one class: never misclassified, so x_best is returned
    neg_distance = lambda logits, y: logits[:, 0]
    x_apgd = attacks.apgd(model_fn, x, y, eps, 100, loss=neg_distance, seed=0)
    x_pgd = attacks.pgd(model_fn, x, y, eps, 2 * eps, 100, loss=neg_distance, seed=0)
    self.assertLess(float(tf.reduce_max(tf.abs(x_apgd - c))), 0.05 * eps)
    self.assertGreater(float(tf.reduce_max(tf.abs(x_pgd - c))), 0.3 * eps)

  def test_apgd_checkpoints(self):
    self.assertEqual(attacks.apgd_checkpoints(100), [22, 41, 57, 70, 80, 87, 93, 99])
    self.assertEqual(attacks.apgd_checkpoints(0), [])
    self.assertEqual(attacks.apgd_checkpoints(10), list(range(2, 11)))

  def test_dlr_needs_three_classes(self):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = tf.zeros([3, 4])
    y = tf.zeros([3], tf.int32)
    with self.assertRaisesRegex(ValueError, "at least 3 classes"):
      attacks.apgd(model, x, y, 0.1, 5, loss="dlr")
    with self.assertRaisesRegex(ValueError, "at least 3 classes"):
      tf.function(lambda: attacks.apgd(model, x, y, 0.1, 5, loss="dlr"))()
    attacks.apgd(model, x, y, 0.1, 5, loss="ce")  # 2 classes are fine for CE


class EotTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(LINF_PARAMS)
  def test_stochastic_model(self, name):
    model = linear_model()
    noisy = lambda t: model(t) + tf.random.normal([tf.shape(t)[0], N_CLASSES], stddev=3.0)
    x, y = toy_data(32, 3)
    x_adv = LINF_ATTACKS[name](noisy, x, y, 0.15, eot_samples=3, seed=0)
    self.assertTrue(np.all(np.isfinite(x_adv.numpy())))
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - x))), 0.15 + 1e-6)
    self.assertLess(accuracy(model, x_adv, y), accuracy(model, x, y) - 0.3)

  def test_stochastic_model_dropout_l2(self):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dropout(0.3), linear_model().layers[-1]])
    x, y = toy_data(32, 3)
    x_adv = attacks.l2_pgd(lambda t: model(t, training=True), x, y, 1.0, 0.3, 5,
                           eot_samples=3)
    self.assertTrue(np.all(np.isfinite(x_adv.numpy())))
    norms = tf.norm(tf.reshape(x_adv - x, [32, -1]), axis=1)
    self.assertAllLessEqual(norms, 1.0 + 1e-5)

  @parameterized.named_parameters(
      ("pgd", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.02, 3, eot_samples=4), 3 * 4),
      ("fgsm", lambda m, x, y: attacks.fgsm(m, x, y, 0.1, eot_samples=5), 5),
      ("l2_pgd", lambda m, x, y: attacks.l2_pgd(m, x, y, 1.0, 0.2, 2, eot_samples=3), 2 * 3),
      ("apgd", lambda m, x, y: attacks.apgd(m, x, y, 0.1, 3, eot_samples=2), (1 + 3) * 2))
  def test_model_calls_per_attack(self, attack, expected_calls):
    x, y = toy_data(8, 3)
    for wrap in (lambda f: f, tf.function):
      model_fn = CountingModel(linear_model())
      wrap(lambda: attack(model_fn, x, y))()
      self.assertEqual(int(model_fn.calls.numpy()), expected_calls)


class GraphModeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      LINF_PARAMS + [dict(testcase_name="l2_pgd", name="l2_pgd")])
  def test_tf_function_matches_eager(self, name):
    model = linear_model()
    x, y = toy_data(32, 3)
    if name == "l2_pgd":
      attack = lambda x, y: attacks.l2_pgd(model, x, y, 1.0, 0.25, 5, seed=0)
    else:
      attack = lambda x, y: LINF_ATTACKS[name](model, x, y, 0.1, seed=0)
    eager = attack(tf.constant(x), tf.constant(y))
    graph = tf.function(attack)(tf.constant(x), tf.constant(y))
    self.assertAllClose(graph, eager, atol=1e-5)
    self.assertNotAllClose(eager, x)

  def test_compiled_and_symbolic_batch(self):
    model = linear_model()
    x, y = toy_data(32, 3)
    run = attacks.compiled(attacks.apgd, model, eps=0.1, steps=5, seed=0)
    self.assertAllClose(run(x, y), attacks.apgd(model, x, y, 0.1, 5, seed=0), atol=1e-5)
    # Unknown batch size in the traced graph, as in an evaluation loop.
    spec = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int64))
    pgd_fn = tf.function(lambda x, y: attacks.pgd(model, x, y, 0.1, 0.05, 3, seed=0),
                         input_signature=spec)
    self.assertAllClose(pgd_fn(x[:7], y[:7]), attacks.pgd(model, x[:7], y[:7], 0.1, 0.05, 3,
                                                          seed=0), atol=1e-5)

  def test_jit_compile(self):
    model = linear_model()
    x, y = toy_data(32, 3)
    run = attacks.compiled(attacks.pgd, model, jit_compile=True, eps=0.1, step_size=0.05,
                           steps=3, eot_samples=2)
    x_adv = run(x, y)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - x))), 0.1 + 1e-6)
    self.assertGreater(mean_ce(model, x_adv, y), mean_ce(model, x, y))

  def test_tensor_arguments_in_graph(self):
    model = linear_model()
    x, y = toy_data(32, 3)

    @tf.function
    def run(eps, steps):
      return attacks.pgd(model, x, y, eps, eps / 4, steps, clip_min=tf.constant(0.0),
                         clip_max=tf.constant(1.0), seed=tf.constant(5))

    x_adv = run(tf.constant(0.1), tf.constant(5, tf.int64))
    self.assertAllClose(x_adv, attacks.pgd(model, x, y, 0.1, 0.025, 5, seed=5), atol=1e-5)


class RestartsTest(tf.test.TestCase):

  def _fooling_point(self):
    model = linear_model()
    x, y = toy_data(10, 3)
    x_fool = attacks.pgd(model, x, y, 1.0, 0.25, 10, seed=0)
    self.assertEqual(accuracy(model, x_fool, y), 0.0)
    self.assertEqual(accuracy(model, x, y), 1.0)
    return model, x, y, x_fool

  def test_keeps_first_fooling_run(self):
    model, x, y, x_fool = self._fooling_point()
    fooled_by_run = {10: [0, 1, 2, 3], 11: [2, 3, 4, 5], 12: [6, 7]}
    seeds = []

    def stub(model_fn, x, y, seed, shift):
      seeds.append(int(seed))
      mask = np.isin(np.arange(10), fooled_by_run[int(seed)])
      # A tiny per-run shift tells the runs apart without changing any prediction.
      return tf.where(mask[:, None, None, None], x_fool, x) + shift * (int(seed) - 10)

    x_adv = attacks.attack_with_restarts(stub, model, x, y, 3, seed=10, shift=1e-4)
    self.assertEqual(seeds, [10, 11, 12])
    self.assertAllClose(x_adv[0:4], x_fool[0:4])
    self.assertAllClose(x_adv[4:6], x_fool[4:6] + 1e-4)
    self.assertAllClose(x_adv[6:8], x_fool[6:8] + 2e-4)
    self.assertAllClose(x_adv[8:], x[8:])
    self.assertAlmostEqual(accuracy(model, x_adv, y), 0.2, places=6)

  def test_skips_runs_once_everything_is_fooled(self):
    model, x, y, x_fool = self._fooling_point()
    calls = []

    def stub(model_fn, x, y):
      calls.append(1)
      return x_fool

    x_adv = attacks.attack_with_restarts(stub, model, x, y, 4)
    self.assertLen(calls, 1)
    self.assertAllEqual(x_adv, x_fool)

  def test_restarts_not_weaker_in_graph(self):
    model = trained_mlp()
    x, y = toy_data(300, 2)
    one = tf.function(lambda: attacks.pgd(model, x, y, 0.1, 0.025, 10, seed=0))()
    many = tf.function(lambda: attacks.attack_with_restarts(
        attacks.pgd, model, x, y, 3, eps=0.1, step_size=0.025, steps=10, seed=0))()
    self.assertLessEqual(accuracy(model, many, y), accuracy(model, one, y))
    self.assertLessEqual(float(tf.reduce_max(tf.abs(many - x))), 0.1 + 1e-6)

  def test_correct(self):
    model, x, y, x_fool = self._fooling_point()
    ok = attacks.correct(model, tf.concat([x[:5], x_fool[5:]], 0), y)
    self.assertEqual(ok.dtype, tf.bool)
    self.assertAllEqual(ok, [True] * 5 + [False] * 5)


class InvalidArgumentsTest(tf.test.TestCase, parameterized.TestCase):

  x = tf.zeros([2, 4, 4, 1])
  y = tf.zeros([2], tf.int32)

  @parameterized.named_parameters(
      ("pgd_eps", lambda m, x, y: attacks.pgd(m, x, y, -1, 0.1, 1), r"eps >= 0.*eps=-1"),
      ("pgd_eps_tensor", lambda m, x, y: attacks.pgd(m, x, y, tf.constant(-0.5), 0.1, 1),
       "eps >= 0"),
      ("pgd_step", lambda m, x, y: attacks.pgd(m, x, y, 0.1, -0.1, 1), "step_size >= 0"),
      ("pgd_steps", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, -1), "steps >= 0"),
      ("pgd_steps_float", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 2.5), "steps"),
      ("pgd_loss", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 1, loss="l1"), "loss"),
      ("pgd_eot", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 1, eot_samples=0),
       "eot_samples"),
      ("pgd_clip", lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.1, 1, clip_min=1.0,
                                               clip_max=0.0), "clip_min <= clip_max"),
      ("pgd_int_x", lambda m, x, y: attacks.pgd(m, tf.cast(x, tf.uint8), y, 0.1, 0.1, 1),
       "floating"),
      ("pgd_float_y", lambda m, x, y: attacks.pgd(m, x, tf.cast(y, tf.float32), 0.1, 0.1, 1),
       "integer labels"),
      ("fgsm_eps", lambda m, x, y: attacks.fgsm(m, x, y, -1), r"eps >= 0.*eps=-1"),
      ("l2_eps", lambda m, x, y: attacks.l2_pgd(m, x, y, -1, 0.1, 1), "eps >= 0"),
      ("l2_steps", lambda m, x, y: attacks.l2_pgd(m, x, y, 1.0, 0.1, -3), "steps >= 0"),
      ("apgd_eps", lambda m, x, y: attacks.apgd(m, x, y, -1), "eps >= 0"),
      ("apgd_steps", lambda m, x, y: attacks.apgd(m, x, y, 0.1, -1), "steps >= 0"),
      ("apgd_steps_tensor", lambda m, x, y: attacks.apgd(m, x, y, 0.1, tf.constant(5)),
       "Python int"),
      ("apgd_loss", lambda m, x, y: attacks.apgd(m, x, y, 0.1, 5, loss="xent"), "loss"),
      ("apgd_rho", lambda m, x, y: attacks.apgd(m, x, y, 0.1, 5, rho=1.5), "rho"),
      ("restarts", lambda m, x, y: attacks.attack_with_restarts(
          attacks.pgd, m, x, y, 0, eps=0.1, step_size=0.1, steps=1), "restarts >= 1"),
  )
  def test_raises(self, call, message):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    with self.assertRaisesRegex(ValueError, message):
      call(model, self.x, self.y)


if __name__ == "__main__":
  tf.test.main()


class TradesTest(tf.test.TestCase):

  def test_kl_is_zero_on_itself_and_positive_otherwise(self):
    logits = tf.random.normal([5, 10])
    self.assertAllClose(attacks.kl_divergence(logits, logits), tf.zeros([5]), atol=1e-6)
    self.assertAllGreater(attacks.kl_divergence(logits, logits + tf.random.normal([5, 10])), 0.0)

  def test_trades_pgd_stays_in_the_ball_and_raises_the_kl(self):
    model, (x, _) = trained_mlp(), toy_data(64, 1)
    model_fn = lambda t: model(t, training=False)  # noqa: E731
    start = attacks.trades_pgd(model_fn, x, 0.3, 0.01, 0, seed=3)  # the Gaussian start only
    x_adv = attacks.trades_pgd(model_fn, x, 0.3, 0.01, 40, seed=3)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - x))), 0.3 + 1e-6)
    self.assertAllInRange(x_adv, 0.0, 1.0)

    def kl(t):
      return float(tf.reduce_mean(attacks.kl_divergence(model_fn(x), model_fn(t))))

    self.assertGreater(kl(x_adv), 10 * kl(start) + 1e-3)
    self.assertAllEqual(attacks.trades_pgd(model_fn, x, 0.3, 0.01, 0, start_std=0.0), x)

  def test_trades_loss_is_the_clean_cross_entropy_at_x_adv_equal_x(self):
    from anp.training import losses as anp_losses
    from anp.training.objectives import Trades
    logits, y = tf.random.normal([8, 10]), tf.range(8)
    ce = anp_losses.cross_entropy(y, logits)
    loss, extra = Trades(beta=6.0).data_loss(y, logits, logits, ce, ce)
    self.assertAllClose(loss, ce)
    self.assertAllClose(extra["trades_kl"], 0.0, atol=1e-6)
    shifted = logits + tf.random.normal([8, 10])
    loss, extra = Trades(beta=6.0).data_loss(y, logits, shifted, ce, None)
    self.assertAllClose(loss, ce + 6.0 * extra["trades_kl"])
    self.assertGreater(float(extra["trades_kl"]), 0.0)
