"""Properties of the beta-Bernoulli mask layer."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl.testing import parameterized

from models.masks import BetaBernoulli, kl_kumaraswamy_beta, kumaraswamy_mean, sample_log_pi

tfd = tfp.distributions


def _layer(units, a_uc=None, b_uc=None, **kw):
  layer = BetaBernoulli(**kw)
  layer.build((None, units))
  if a_uc is not None:
    layer.a_uc.assign(np.broadcast_to(np.float32(a_uc), (units,)))
  if b_uc is not None:
    layer.b_uc.assign(np.broadcast_to(np.float32(b_uc), (units,)))
  return layer


class KumaraswamyMathTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((0.3133, 1.0), (1.5, 2.0), (0.7, 0.4), (5.0, 30.0))
  def test_mean_matches_monte_carlo(self, a, b):
    a_t = tf.fill([200_000], np.float32(a))
    b_t = tf.fill([200_000], np.float32(b))
    tf.random.set_seed(1)
    samples = tf.exp(sample_log_pi(a_t, b_t))
    mc = float(tf.reduce_mean(samples))
    stderr = float(tf.math.reduce_std(samples)) / np.sqrt(200_000)
    closed = float(kumaraswamy_mean(tf.constant(a), tf.constant(b)))
    self.assertAllClose(closed, mc, atol=5 * stderr + 1e-4)
    self.assertAllClose(closed, float(tfd.Kumaraswamy(a, b).mean()), rtol=1e-4)

  @parameterized.parameters((1.5, 2.0, 0.5), (0.8, 1.2, 0.3), (3.0, 1.5, 1.0),
                            (0.3133, 1.0, 1e-4), (2.1269, 1.0, 1e-4))
  def test_kl_matches_numeric_integration(self, a, b, alpha):
    # KL = int q log(q/p) dx, integrated in t = log x where the densities are smooth.
    t = np.linspace(-60.0, -1e-7, 400_001)
    x = tf.constant(np.exp(t), tf.float64)
    log_q = tfd.Kumaraswamy(np.float64(a), np.float64(b)).log_prob(x).numpy()
    log_p = tfd.Beta(np.float64(alpha), np.float64(1.0)).log_prob(x).numpy()
    integrand = np.exp(log_q + t) * (log_q - log_p)
    numeric = np.trapezoid(integrand, t)
    closed = float(kl_kumaraswamy_beta(tf.constant(a, tf.float64), tf.constant(b, tf.float64),
                                       alpha))
    self.assertAllClose(closed, numeric, rtol=2e-3, atol=2e-3)

  def test_kl_nonnegative_over_grid(self):
    raw = np.linspace(-10, 50, 61, dtype=np.float32)
    a_uc, b_uc = np.meshgrid(raw, raw)
    layer = _layer(a_uc.size, a_uc.ravel(), b_uc.ravel())
    self.assertTrue(np.all(np.isfinite(layer.kl().numpy())))
    per_unit = kl_kumaraswamy_beta(layer.a, layer.b, layer.alpha).numpy()
    self.assertGreaterEqual(per_unit.min(), -1e-4)


class BetaBernoulliTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(((4, 7),), ((3, 5, 5, 7),))
  def test_shapes_random_in_training_deterministic_at_inference(self, shape):
    layer = _layer(shape[-1])
    x = tf.random.uniform(shape, 0.5, 1.5)
    y1, y2 = layer(x, training=True), layer(x, training=True)
    self.assertEqual(y1.shape, x.shape)
    self.assertNotAllClose(y1, y2)
    z1 = layer(x, training=False)
    self.assertAllEqual(z1, layer(x, training=False))
    self.assertAllClose(z1, x * layer.expected_pi())

  def test_training_masks_are_per_example_and_per_channel(self):
    layer = _layer(6)
    x = tf.ones([64, 3, 3, 6])
    z = layer(x, training=True).numpy()
    # Same mask over the spatial positions of a channel, different between examples.
    self.assertAllClose(z, np.broadcast_to(z[:, :1, :1, :], z.shape))
    self.assertGreater(np.std(z[:, 0, 0, 0]), 0.01)

  def test_inference_zeroes_exactly_the_units_below_threshold(self):
    # a_uc = -10 gives E[pi] ~ 1e-4 < 1e-3; a_uc = 2 gives E[pi] ~ 0.68.
    a_uc = np.array([-10, 2, -10, 2, 2], np.float32)
    layer = _layer(5, a_uc, threshold=1e-3)
    e_pi = layer.expected_pi().numpy()
    self.assertAllEqual(e_pi > 1e-3, [False, True, False, True, True])
    y = layer(tf.ones([2, 5]), training=False).numpy()
    self.assertAllEqual(y[:, [0, 2]], np.zeros([2, 2]))
    self.assertAllClose(y[:, [1, 3, 4]], np.broadcast_to(e_pi[[1, 3, 4]], (2, 3)))
    self.assertEqual(int(layer.n_active()), 3)

  def test_mask_gradients_finite_over_extreme_parameters(self):
    raw = np.array([-10, -5, -2, -1, 0, 0.5413, 1, 2, 5, 10, 20, 35, 50], np.float32)
    a_uc, b_uc = np.meshgrid(raw, raw)
    layer = _layer(a_uc.size, a_uc.ravel(), b_uc.ravel())
    x = tf.ones([32, a_uc.size])
    for seed in range(20):
      tf.random.set_seed(seed)
      with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.random.normal(y.shape)) + layer.kl()
      grads = tape.gradient(loss, [layer.a_uc, layer.b_uc])
      self.assertTrue(np.all(np.isfinite(y.numpy())))
      for g in grads:
        self.assertTrue(np.all(np.isfinite(g.numpy())), f"non-finite gradient, seed {seed}")
    self.assertTrue(np.all(np.isfinite(layer.expected_pi().numpy())))

  def test_samples_near_zero_and_one_are_finite(self):
    # b_uc = -2 (b ~ 0.13) makes sampled pi round to 1; a_uc = -10 sends pi to 0.
    for a_uc, b_uc in [(0.0, -2.0), (-10.0, 50.0), (50.0, -10.0), (-10.0, -10.0)]:
      layer = _layer(16, a_uc, b_uc)
      with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(tf.ones([256, 16]), training=True))
      for g in tape.gradient(y, [layer.a_uc, layer.b_uc]):
        self.assertTrue(np.all(np.isfinite(g.numpy())), (a_uc, b_uc))

  def test_get_config_round_trip(self):
    layer = BetaBernoulli(a_init=2.0, alpha=1e-3, temperature=0.2, threshold=0.01)
    clone = BetaBernoulli.from_config(layer.get_config())
    for key in ("a_init", "b_init", "alpha", "temperature", "threshold"):
      self.assertEqual(getattr(clone, key), getattr(layer, key))

  @parameterized.parameters(dict(alpha=0.0), dict(temperature=-1.0), dict(threshold=1.5))
  def test_invalid_arguments_raise(self, **kwargs):
    with self.assertRaisesRegex(ValueError, "Expected"):
      BetaBernoulli(**kwargs)


if __name__ == "__main__":
  tf.test.main()
