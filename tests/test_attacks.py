"""Attacks: inside the eps-ball and the box, raising the loss, lowering accuracy."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import attacks

N_CLASSES, DIM = 5, 16


def _toy_problem(n=256, seed=0):
  """A linearly separable problem in [0,1]^16 (classes = clusters) and a trained model."""
  rng = np.random.default_rng(seed)
  centers = rng.uniform(0.2, 0.8, [N_CLASSES, DIM]).astype(np.float32)
  y = rng.integers(0, N_CLASSES, n).astype(np.int32)
  x = np.clip(centers[y] + rng.normal(0, 0.12, [n, DIM]), 0, 1).astype(np.float32)
  model = tf.keras.Sequential([tf.keras.Input([4, 4, 1]), tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(32, activation="relu"),
                               tf.keras.layers.Dense(N_CLASSES)])
  model.compile(tf.keras.optimizers.Adam(1e-2),
                tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  xs = x.reshape(-1, 4, 4, 1)
  model.fit(xs, y, epochs=60, batch_size=64, verbose=0)
  return model, tf.constant(xs), tf.constant(y)


MODEL, X, Y = None, None, None


def setUpModule():
  global MODEL, X, Y
  tf.keras.utils.set_random_seed(0)
  MODEL, X, Y = _toy_problem()


def _acc(x):
  return float(tf.reduce_mean(tf.cast(attacks.correct(MODEL, x, Y), tf.float32)))


def _ce(x):
  return float(tf.reduce_mean(attacks.cross_entropy(MODEL(x), Y)))


ATTACKS = {
    "pgd": lambda m, x, y, eps, **kw: attacks.pgd(m, x, y, eps, eps / 4, 10, **kw),
    "pgd_cw": lambda m, x, y, eps, **kw: attacks.pgd(m, x, y, eps, eps / 4, 10, loss="cw", **kw),
    "fgsm": lambda m, x, y, eps, **kw: attacks.fgsm(m, x, y, eps, **kw),
    "apgd_ce": lambda m, x, y, eps, **kw: attacks.apgd(m, x, y, eps, 20, **kw),
    "apgd_dlr": lambda m, x, y, eps, **kw: attacks.apgd(m, x, y, eps, 20, loss="dlr", **kw),
}


class LinfAttackTest(tf.test.TestCase, parameterized.TestCase):

  def test_model_is_accurate(self):
    self.assertGreater(_acc(X), 0.95)

  @parameterized.named_parameters(*[(k, k) for k in ATTACKS])
  def test_inside_ball_and_box_and_stronger_than_clean(self, name):
    eps = 0.15
    x_adv = ATTACKS[name](MODEL, X, Y, eps)
    self.assertEqual(x_adv.shape, X.shape)
    self.assertEqual(x_adv.dtype, tf.float32)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - X))), eps + 1e-6)
    self.assertGreaterEqual(float(tf.reduce_min(x_adv)), 0.0)
    self.assertLessEqual(float(tf.reduce_max(x_adv)), 1.0)
    self.assertLess(_acc(x_adv), _acc(X) - 0.2)
    if name in ("pgd", "fgsm", "apgd_ce"):
      self.assertGreater(_ce(x_adv), _ce(X))

  @parameterized.named_parameters(*[(k, k) for k in ATTACKS])
  def test_custom_box(self, name):
    x_adv = ATTACKS[name](MODEL, X, Y, 0.3, clip_min=0.1, clip_max=0.7)
    self.assertGreaterEqual(float(tf.reduce_min(x_adv)), 0.1 - 1e-7)
    self.assertLessEqual(float(tf.reduce_max(x_adv)), 0.7 + 1e-7)

  @parameterized.named_parameters(("pgd", "pgd"), ("apgd_ce", "apgd_ce"))
  def test_large_eps_breaks_every_example(self, name):
    self.assertLess(_acc(ATTACKS[name](MODEL, X, Y, 1.0)), 0.02)

  def test_zero_steps_without_random_start_is_identity(self):
    self.assertAllEqual(attacks.pgd(MODEL, X, Y, 0.1, 0.01, 0, rand_init=False), X)

  def test_apgd_at_least_as_strong_as_pgd(self):
    eps = 0.1
    tf.random.set_seed(1)
    pgd_acc = _acc(attacks.pgd(MODEL, X, Y, eps, eps / 4, 20))
    apgd_acc = _acc(attacks.apgd(MODEL, X, Y, eps, 100))
    self.assertLess(pgd_acc, _acc(X) - 0.2)
    self.assertLessEqual(apgd_acc, pgd_acc + 0.02)

  def test_restarts_never_weaker(self):
    eps = 0.08
    tf.random.set_seed(2)
    one = attacks.pgd(MODEL, X, Y, eps, eps / 4, 5)
    tf.random.set_seed(2)
    five = attacks.attack_with_restarts(attacks.pgd, MODEL, X, Y, 5, eps=eps,
                                        step_size=eps / 4, steps=5)
    self.assertLessEqual(_acc(five), _acc(one))
    self.assertLessEqual(float(tf.reduce_max(tf.abs(five - X))), eps + 1e-6)

  def test_eot_on_a_stochastic_model(self):
    def noisy(x):
      return MODEL(x + tf.random.normal(tf.shape(x), stddev=0.05))
    x_adv = tf.function(lambda: attacks.pgd(noisy, X, Y, 0.15, 0.04, 10, eot_samples=4))()
    self.assertTrue(np.all(np.isfinite(x_adv.numpy())))
    self.assertLess(_acc(x_adv), _acc(X) - 0.2)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - X))), 0.15 + 1e-6)

  def test_works_inside_tf_function(self):
    compiled = tf.function(lambda x, y: attacks.apgd(MODEL, x, y, 0.1, 10))
    x_adv = compiled(X, Y)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(x_adv - X))), 0.1 + 1e-6)

  @parameterized.parameters(dict(eps=-0.1), dict(steps=-1), dict(loss="hinge"),
                            dict(eot_samples=0))
  def test_invalid_arguments_raise(self, **override):
    kwargs = dict(eps=0.1, step_size=0.01, steps=3)
    kwargs.update(override)
    with self.assertRaises(ValueError):
      attacks.pgd(MODEL, X, Y, **kwargs)

  def test_dlr_needs_three_classes(self):
    with self.assertRaisesRegex(ValueError, "3 classes"):
      attacks.dlr(tf.zeros([4, 2]), tf.zeros([4], tf.int32))


class L2AttackTest(tf.test.TestCase):

  def test_l2_pgd_inside_ball_and_effective(self):
    eps = 0.8
    x_adv = attacks.l2_pgd(MODEL, X, Y, eps, eps / 4, 10)
    norms = tf.norm(tf.reshape(x_adv - X, [X.shape[0], -1]), axis=1)
    self.assertLessEqual(float(tf.reduce_max(norms)), eps + 1e-5)
    self.assertGreaterEqual(float(tf.reduce_min(x_adv)), 0.0)
    self.assertLess(_acc(x_adv), _acc(X) - 0.2)


if __name__ == "__main__":
  tf.test.main()
