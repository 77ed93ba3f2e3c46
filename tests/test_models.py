"""Shapes and behaviour of LeNet5-Caffe and VGG-16."""

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from models.lenet import LeNet5
from models.ops import conv2d_one_channel
from models.vgg import VGG
from models.walk import sublayers

# conv1 5*5*1*20+20, conv2 5*5*20*50+50, dense3 800*500+500, dense4 500*10+10
LENET_PARAMS = 520 + 25050 + 400500 + 5010


def _built(net, shape):
  net(tf.zeros((1,) + shape))
  return net


class ModelTest(tf.test.TestCase, parameterized.TestCase):

  def test_lenet_shapes_features_and_sites(self):
    net = _built(LeNet5(), (28, 28, 1))
    logits, feats = net(tf.random.uniform([3, 28, 28, 1]), training=True, return_features=True)
    self.assertEqual(logits.shape, (3, 10))
    self.assertEqual([f.shape[1:] for f in feats], [(24, 24, 20), (8, 8, 50), (500,)])
    self.assertEqual([m.units for m in net.masks], [20, 50, 800, 500])
    self.assertEqual(sum(int(np.prod(v.shape)) for v in net.weight_variables), LENET_PARAMS)
    self.assertEqual(net.n_active(), [20, 50, 800, 500])
    self.assertEqual(net.sparsity(), 0.0)

  @parameterized.parameters(True, False)
  def test_vgg_shapes_and_sites(self, standardize):
    net = _built(VGG(n_classes=100, standardize=standardize), (32, 32, 3))
    logits, feats = net(tf.random.uniform([2, 32, 32, 3]), training=True, return_features=True)
    self.assertEqual(logits.shape, (2, 100))
    self.assertLen(feats, 15)
    self.assertEqual([m.units for m in net.masks], list(net.unit_counts))
    self.assertEqual(len(net.masks), 15)
    self.assertEqual(feats[12].shape, (2, 2, 2, 512))

  @parameterized.parameters((LeNet5, (28, 28, 1)), (VGG, (32, 32, 3)))
  def test_masked_random_in_training_deterministic_at_inference(self, cls, shape):
    net = _built(cls(), shape)
    x = tf.random.uniform((4,) + shape)
    self.assertAllEqual(net(x, training=False), net(x, training=False))
    self.assertNotAllClose(net(x, training=True), net(x, training=True))

  def test_pruned_units_are_counted_and_silenced(self):
    net = _built(LeNet5(), (28, 28, 1))
    a_uc = np.full([20], 2.0, np.float32)
    a_uc[:5] = -10.0  # E[pi] ~ 1e-4, below the 1e-3 threshold
    net.bbd1.a_uc.assign(a_uc)
    self.assertEqual(net.n_active()[0], 15)
    self.assertAllClose(net.sparsity(), 5 / 1370)
    _, feats = net(tf.random.uniform([2, 28, 28, 1]), return_features=True)
    self.assertAllEqual(feats[0][..., :5], tf.zeros([2, 24, 24, 5]))

  @parameterized.parameters((LeNet5, (28, 28, 1)), (VGG, (32, 32, 3)))
  def test_biases_start_glorot_uniform_like_the_original(self, cls, shape):
    # TF1's get_variable default on a bias of shape [n]: U(-sqrt(3/n), sqrt(3/n)).
    net = _built(cls(), shape)
    biases = [l.bias for l in sublayers(net) if getattr(l, "bias", None) is not None]
    self.assertGreaterEqual(len(biases), 4)
    for b in biases:
      v, limit = b.numpy(), np.sqrt(3.0 / b.shape[0])
      self.assertLessEqual(np.abs(v).max(), limit)
      self.assertGreater(np.abs(v).max(), 0.5 * limit)  # spread over the range, not zeros
    zeros = _built(cls(bias_init="zeros"), shape)
    for layer in sublayers(zeros):
      if getattr(layer, "bias", None) is not None:
        self.assertAllEqual(layer.bias, tf.zeros_like(layer.bias))
    with self.assertRaisesRegex(ValueError, "Expected bias_init"):
      cls(bias_init="ones")

  @parameterized.parameters(True, False)
  def test_lenet_attack_fn_equals_the_net_without_pruned_units(self, masked):
    net = _built(LeNet5(masked=masked), (28, 28, 1))
    rng = np.random.default_rng(0)
    for m in net.masks:  # prune ~60% of every site, keep random E[pi] on the rest
      a_uc = rng.uniform(-1.0, 2.0, m.units).astype(np.float32)
      a_uc[rng.random(m.units) < 0.6] = -10.0
      m.a_uc.assign(a_uc)
    x = tf.random.uniform([16, 28, 28, 1])
    y = tf.range(16) % 10
    fast = net.attack_fn()
    self.assertAllClose(fast(x), net(x, training=False), atol=1e-5, rtol=1e-5)

    def grad(fn):
      with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, fn(x)))
      return tape.gradient(loss, x)

    g_fast, g_net = grad(fast), grad(lambda t: net(t, training=False))
    self.assertAllClose(g_fast, g_net, atol=1e-6 * float(tf.reduce_max(tf.abs(g_net))))
    if masked:  # units really were pruned
      self.assertTrue(all(k < n for k, n in zip(net.n_active(), net.unit_counts)))

  def test_lenet_bfloat16_attack_fn_is_float32_outside_and_close_inside(self):
    net = _built(LeNet5(), (28, 28, 1))
    x = tf.random.uniform([16, 28, 28, 1])
    y = tf.range(16) % 10

    def logits_and_grad(fn):
      with tf.GradientTape() as tape:
        tape.watch(x)
        logits = fn(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
      return logits, tape.gradient(loss, x)

    (l32, g32), (l16, g16) = (logits_and_grad(net.attack_fn(d))
                              for d in (tf.float32, tf.bfloat16))
    self.assertEqual((l16.dtype, g16.dtype), (tf.float32, tf.float32))
    # bfloat16 keeps 8 bits of mantissa: ~1% per op, not float32's 1e-7.
    scale = float(tf.reduce_max(tf.abs(l32)))
    self.assertAllClose(l16, l32, atol=0.05 * scale)
    self.assertGreater(float(tf.reduce_max(tf.abs(l16 - l32))), 1e-6 * scale)  # really bf16
    cos = tf.reduce_sum(g16 * g32) / (tf.norm(g16) * tf.norm(g32))
    self.assertGreater(float(cos), 0.9)
    # PGD moves along sign(g): nearly every pixel's step keeps its direction.
    agree = tf.reduce_mean(tf.cast(tf.sign(g16) == tf.sign(g32), tf.float32))
    self.assertGreater(float(agree), 0.85)

  def test_only_lenet_attack_fn_takes_bfloat16(self):
    net = _built(VGG(n_classes=10), (32, 32, 3))
    with self.assertRaisesRegex(ValueError, "Expected dtype float32 for VGG"):
      net.attack_fn(tf.bfloat16)

  def test_conv2d_one_channel_gradients_match_tf(self):
    x = tf.random.uniform([3, 11, 9, 1])
    k = tf.random.normal([5, 3, 1, 4])
    dy = tf.random.normal([3, 7, 7, 4])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch([x, k])
      ours, ref = conv2d_one_channel(x, k), tf.nn.conv2d(x, k, 1, "VALID")
    self.assertAllClose(ours, ref)
    for a, b in zip(tape.gradient(ours, [x, k], output_gradients=dy),
                    tape.gradient(ref, [x, k], output_gradients=dy)):
      self.assertAllClose(a, b, atol=1e-5)

  def test_unmasked_nets_have_no_mask_variables(self):
    for net, shape in [(LeNet5(masked=False), (28, 28, 1)), (VGG(masked=False), (32, 32, 3))]:
      _built(net, shape)
      self.assertEmpty(net.mask_variables)
      self.assertEqual(net.n_active(), list(net.unit_counts))
      self.assertAllEqual(net.kl(), 0.0)

  def test_gradients_are_finite(self):
    net = _built(VGG(), (32, 32, 3))
    x = tf.random.uniform([2, 32, 32, 3])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(net(x, training=True)) + net.kl()
    grads = tape.gradient(loss, net.trainable_variables)
    self.assertLen(grads, len(net.trainable_variables))
    for g, v in zip(grads, net.trainable_variables):
      self.assertIsNotNone(g, v.name)
      self.assertTrue(np.all(np.isfinite(g.numpy())), v.name)


if __name__ == "__main__":
  tf.test.main()


@pytest.mark.parametrize("method", ["standard", "anp_vs"])
def test_vgg_checkpoint_holds_every_weight(tmp_path, method):
  """Every kernel, bias, BN statistic and mask of VGG-16 is in its checkpoint (the blocks'
  layers once were not: a CIFAR run could neither resume nor initialise another)."""
  from anp.config import Config
  from anp.runs.rundir import build_net
  net = build_net(Config(dataset="cifar10", method=method).resolved())
  prefix = tf.train.Checkpoint(net=net).write(str(tmp_path / "ckpt"))
  saved = {k for k, _ in tf.train.list_variables(prefix) if k.endswith("VARIABLE_VALUE")}
  weights = [v for v in net.variables if "seed_generator" not in v.path]
  assert len(saved) == len(weights)
  assert sum(k.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE") for k in saved) == 15
