"""Checkpoints of the original TF1 code: detection, mapping, and the original forward pass.

Each test writes a checkpoint the way the authors' code does (tf.compat.v1 variables named
`<scope>/<layer>/<var>` saved by a v1 Saver in a graph session) with random values, and
compares our Keras model after `restore_original` with the original forward pass written
here independently in NumPy, in the original's NCHW layout.
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from anp.runs import loading, original_ckpt
from anp.config import Config
from anp.runs.rundir import build_net
from models.lenet import LeNet5
from models.vgg import VGG

THRES = 1e-3
VGG_POOL_AFTER = {2, 4, 7, 10, 13}


# --------------------------------------------------------------------------------------
# Writing a checkpoint as the original code does.


def _he(rng, shape, fan_in):
  return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def _mask_values(rng, n):
  # a_uc in [-10, 3]: E[pi] spans pruned (<= 1e-3) and kept units.
  return {"a_uc": rng.uniform(-10.0, 3.0, n).astype(np.float32),
          "b_uc": rng.uniform(-1.0, 2.0, n).astype(np.float32)}


def lenet_values(rng, masked=True):
  v = {}
  for name, shape in (("conv1", (5, 5, 1, 20)), ("conv2", (5, 5, 20, 50)),
                      ("dense3", (800, 500)), ("dense4", (500, 10))):
    v[f"{name}/W"] = _he(rng, shape, int(np.prod(shape[:-1])))
    v[f"{name}/b"] = rng.normal(0, 0.1, shape[-1]).astype(np.float32)
  if masked:
    for i, n in enumerate((20, 50, 800, 500), start=1):
      for k, val in _mask_values(rng, n).items():
        v[f"bbd{i}/{k}"] = val
  return v


def vgg_values(rng, n_classes=10):
  v, units, c_in = {}, original_ckpt.VGG_UNITS, 3
  for i in range(1, 14):
    c = units[i - 1]
    v[f"conv{i}/W"] = _he(rng, (3, 3, c_in, c), 9 * c_in)
    v[f"conv{i}/b"] = rng.normal(0, 0.1, c).astype(np.float32)
    c_in = c
  for i in range(1, 15):
    c = units[i - 1]
    v[f"bn{i}/gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    v[f"bn{i}/beta"] = rng.normal(0, 0.1, c).astype(np.float32)
    v[f"bn{i}/moving_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
    v[f"bn{i}/moving_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
  v["dense14/W"] = _he(rng, (512, 512), 512)
  v["dense14/b"] = rng.normal(0, 0.1, 512).astype(np.float32)
  v["dense15/W"] = _he(rng, (512, n_classes), 512)
  v["dense15/b"] = rng.normal(0, 0.1, n_classes).astype(np.float32)
  for i in range(1, 16):
    for k, val in _mask_values(rng, units[i - 1]).items():
      v[f"bbd{i}/{k}"] = val
  return v


def write_original_checkpoint(directory, scope, values, step=1234, extras=True):
  """Saves `values` ({'conv1/W': array}) under `scope` with a tf.compat.v1 Saver."""
  v1 = tf.compat.v1
  with tf.Graph().as_default():
    variables = []
    with v1.variable_scope(scope):
      for key, value in values.items():
        layer, name = key.split("/")
        with v1.variable_scope(layer, reuse=v1.AUTO_REUSE):
          variables.append(v1.get_variable(name, initializer=tf.constant(value)))
    if extras:  # what a training checkpoint also holds: Adam slots, the global step
      variables.append(v1.get_variable(f"{scope}/conv1/W/Adam",
                                       initializer=tf.constant(values["conv1/W"])))
      variables.append(v1.train.get_or_create_global_step())
    saver = v1.train.Saver(variables)
    with v1.Session() as sess:
      sess.run(v1.global_variables_initializer())
      return saver.save(sess, os.path.join(directory, "model"), global_step=step)


# --------------------------------------------------------------------------------------
# The original forward pass in NumPy, NCHW.


def softplus(x):
  return np.logaddexp(0.0, x)


_lgamma = np.vectorize(math.lgamma)


def original_mask(v, key):
  """E[pi] zeroed at or below the threshold (BBDropout.__call__ with train=False)."""
  a = softplus(np.maximum(-10.0, v[f"{key}/a_uc"].astype(np.float64)))
  b = softplus(np.clip(v[f"{key}/b_uc"].astype(np.float64), -10.0, 50.0))
  e_pi = b * np.exp(_lgamma(1 + 1 / a) + _lgamma(b) - _lgamma(1 + 1 / a + b))
  return np.where(e_pi > THRES, e_pi, 0.0)


def conv_nchw(x, w, b, pad=0):
  """x [B, C, H, W], w [k, k, in, out] (the original's layout), stride 1."""
  if pad:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = w.shape[0]
  windows = sliding_window_view(x, (k, k), axis=(2, 3))  # [B, C, H', W', k, k]
  out = np.tensordot(windows, w, axes=([1, 4, 5], [2, 0, 1]))  # [B, H', W', out]
  return out.transpose(0, 3, 1, 2) + b[None, :, None, None]


def pool_nchw(x):
  b, c, h, w = x.shape
  return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def relu(x):
  return np.maximum(x, 0.0)


def lenet_original_forward(v, x, masked=True):
  """LeNetConv.__call__(x, train=False, mode='bbd' if masked else 'base')."""
  m = (lambda key: original_mask(v, key)) if masked else (lambda key: 1.0)
  feats = []
  h = x.reshape(-1, 1, 28, 28).astype(np.float64)
  h = relu(conv_nchw(h, v["conv1/W"], v["conv1/b"]) * np.reshape(m("bbd1"), (1, -1, 1, 1)))
  feats.append(h)
  h = pool_nchw(h)
  h = relu(conv_nchw(h, v["conv2/W"], v["conv2/b"]) * np.reshape(m("bbd2"), (1, -1, 1, 1)))
  feats.append(h)
  h = pool_nchw(h).reshape(len(h), -1)  # NCHW flatten: c * 16 + h * 4 + w
  h = relu((h * m("bbd3")) @ v["dense3/W"] + v["dense3/b"])
  feats.append(h)
  return (h * m("bbd4")) @ v["dense4/W"] + v["dense4/b"], feats


def per_image_standardization(images):
  n = np.prod(images.shape[1:])
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  std = np.maximum(images.std(axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(n))
  return (images - mean) / std


def vgg_original_forward(v, images):
  """cifar10.preprocess_image (standardize, transpose [2, 1, 0]) then VGG(mode='bbd')."""
  def bn(x, i):
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    g = lambda k: np.reshape(v[f"bn{i}/{k}"], shape)  # noqa: E731
    return (x - g("moving_mean")) / np.sqrt(g("moving_var") + 1e-3) * g("gamma") + g("beta")

  x = per_image_standardization(images.astype(np.float64))
  x = x.transpose(0, 3, 2, 1)  # per image [H, W, C] -> [C, W, H]
  feats = []
  for i in range(1, 14):
    x = conv_nchw(x, v[f"conv{i}/W"], v[f"conv{i}/b"], pad=1)
    x = relu(bn(x * original_mask(v, f"bbd{i}").reshape(1, -1, 1, 1), i))
    feats.append(x)
    if i in VGG_POOL_AFTER:
      x = pool_nchw(x)
  x = x.reshape(len(x), -1)
  x = (x * original_mask(v, "bbd14")) @ v["dense14/W"] + v["dense14/b"]
  feats.append(x)
  x = relu(bn(x, 14))
  feats.append(x)
  return (x * original_mask(v, "bbd15")) @ v["dense15/W"] + v["dense15/b"], feats


# --------------------------------------------------------------------------------------


def test_flatten_permutation_maps_nhwc_to_nchw():
  fmap = np.random.default_rng(0).standard_normal((4, 4, 50))  # one NHWC map
  ours = fmap.reshape(-1)
  theirs = fmap.transpose(2, 0, 1).reshape(-1)  # NCHW flatten
  np.testing.assert_array_equal(theirs[original_ckpt.lenet_flatten_permutation()], ours)


@pytest.mark.parametrize("masked", [True, False])
def test_lenet_reproduces_original_forward(tmp_path, masked):
  rng = np.random.default_rng(1 if masked else 2)
  values = lenet_values(rng, masked=masked)
  write_original_checkpoint(str(tmp_path), "lenet_conv", values)
  if masked:  # the random masks prune some units and keep others
    e_pi = original_mask(values, "bbd3")
    assert 0 < (e_pi == 0).sum() < len(e_pi)

  info = original_ckpt.describe(str(tmp_path))
  assert info["arch"] == "lenet" and info["scope"] == "lenet_conv"
  assert info["masked"] == masked and info["n_classes"] == 10
  assert original_ckpt.is_original(str(tmp_path))
  assert original_ckpt.is_original(info["prefix"])

  net = LeNet5(10, masked=masked, threshold=THRES)
  net(tf.zeros((1, 28, 28, 1)))
  summary = original_ckpt.restore_original(net, str(tmp_path))
  assert "lenet_conv/conv1/W/Adam" not in summary["loaded"]
  assert len(summary["loaded"]) == (16 if masked else 8)

  x = rng.uniform(0, 1, (8, 784)).astype(np.float32)
  want_logits, want_feats = lenet_original_forward(values, x, masked)
  logits, feats = net(x.reshape(-1, 28, 28, 1), training=False, return_features=True)
  np.testing.assert_allclose(logits.numpy(), want_logits, atol=1e-4, rtol=0)
  for ours, theirs in zip(feats[:2], want_feats[:2]):  # conv maps: NHWC vs NCHW
    np.testing.assert_allclose(ours.numpy().transpose(0, 3, 1, 2), theirs, atol=1e-4)
  np.testing.assert_allclose(feats[2].numpy(), want_feats[2], atol=1e-4)
  if masked:
    kept = [int((original_mask(values, f"bbd{i}") > 0).sum()) for i in range(1, 5)]
    assert net.n_active() == kept


def test_mapping_is_not_the_identity(tmp_path):
  """Loading dense3/bbd3 without the permutation would give other logits: the test bites."""
  rng = np.random.default_rng(3)
  values = lenet_values(rng)
  write_original_checkpoint(str(tmp_path), "lenet_conv", values)
  net = LeNet5(10, masked=True, threshold=THRES)
  net(tf.zeros((1, 28, 28, 1)))
  original_ckpt.restore_original(net, str(tmp_path))
  net.dense3.kernel.assign(values["dense3/W"])
  net.bbd3.a_uc.assign(values["bbd3/a_uc"])
  net.bbd3.b_uc.assign(values["bbd3/b_uc"])
  x = rng.uniform(0, 1, (4, 784)).astype(np.float32)
  want, _ = lenet_original_forward(values, x)
  assert np.abs(net(x.reshape(-1, 28, 28, 1)).numpy() - want).max() > 1e-2


def test_vgg_reproduces_original_forward(tmp_path):
  rng = np.random.default_rng(4)
  values = vgg_values(rng)
  write_original_checkpoint(str(tmp_path), "vgg", values, extras=False)
  info = original_ckpt.describe(str(tmp_path))
  assert (info["arch"], info["n_classes"], info["masked"]) == ("vgg", 10, True)

  cfg = loading.original_config(str(tmp_path), Config(mode="eval", dataset="mnist"))
  assert (cfg.dataset, cfg.preprocess, cfg.masked) == ("cifar10", "original", True)
  net, _ = loading.load_original_run(str(tmp_path), Config(mode="eval"))
  assert isinstance(net, VGG) and not net.standardize

  images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  want_logits, want_feats = vgg_original_forward(values, images)
  x = tf.image.per_image_standardization(images)  # preprocess 'original', outside the net
  logits, feats = net(x, training=False, return_features=True)
  scale = np.abs(want_logits).max()
  np.testing.assert_allclose(logits.numpy(), want_logits, atol=1e-4 * max(1.0, scale))
  # Our maps are the original's with height and width swapped back: [B, C, W, H].
  for i in (0, 6, 12):
    theirs = want_feats[i]
    ours = feats[i].numpy().transpose(0, 3, 2, 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))
  np.testing.assert_allclose(feats[14].numpy(), want_feats[14],
                             atol=1e-4 * max(1.0, np.abs(want_feats[14]).max()))


def test_build_from_original_lenet_config(tmp_path):
  write_original_checkpoint(str(tmp_path), "lenet_conv", lenet_values(np.random.default_rng(5),
                                                                      masked=False))
  net, cfg = loading.load_original_run(str(tmp_path), Config(mode="eval",
                                                                    method="anp_vs"))
  assert (cfg.dataset, cfg.method, cfg.preprocess) == ("mnist", "standard", "pixel")
  assert not net.masks


def test_our_checkpoints_and_empty_dirs_are_not_original(tmp_path):
  assert not original_ckpt.is_original(str(tmp_path))
  assert original_ckpt.describe(str(tmp_path / "nothing")) is None
  net = build_net(Config(dataset="mnist", method="anp_vs").resolved())
  prefix = tf.train.Checkpoint(net=net).save(str(tmp_path / "ours" / "ckpt"))
  assert not original_ckpt.is_original(str(tmp_path / "ours"))
  assert not original_ckpt.is_original(prefix)
  with pytest.raises(original_ckpt.OriginalCheckpointError, match="no checkpoint of the orig"):
    original_ckpt.restore_original(net, prefix)


def test_wrong_architecture_and_missing_variables_are_user_errors(tmp_path):
  values = lenet_values(np.random.default_rng(6))
  write_original_checkpoint(str(tmp_path / "lenet"), "lenet_conv", values)
  vgg = VGG(10, masked=True)
  vgg(tf.zeros((1, 32, 32, 3)))
  with pytest.raises(original_ckpt.OriginalCheckpointError, match="lenet"):
    original_ckpt.restore_original(vgg, str(tmp_path / "lenet"))

  del values["dense3/W"]
  write_original_checkpoint(str(tmp_path / "broken"), "lenet_conv", values)
  net = LeNet5(10, masked=True)
  net(tf.zeros((1, 28, 28, 1)))
  before = net.conv1.kernel.numpy().copy()
  with pytest.raises(original_ckpt.OriginalCheckpointError, match="dense3/W"):
    original_ckpt.restore_original(net, str(tmp_path / "broken"))
  np.testing.assert_array_equal(net.conv1.kernel.numpy(), before)  # nothing half-loaded


def test_source_scope_is_recognised(tmp_path):
  values = lenet_values(np.random.default_rng(7), masked=False)
  write_original_checkpoint(str(tmp_path), "lenet_conv_source", values)
  info = original_ckpt.describe(str(tmp_path))
  assert info["scope"] == "lenet_conv_source" and not info["masked"]


def test_eval_mode_on_an_original_checkpoint_directory(tmp_path):
  from anp.evaluation.evaluate import run_eval
  from tests.helpers import have_real_data, mnist_slice
  if not have_real_data():
    pytest.skip("real MNIST not found")
  values = lenet_values(np.random.default_rng(8))
  write_original_checkpoint(str(tmp_path), "lenet_conv", values)
  arrays = mnist_slice()
  result = run_eval(Config(mode="eval", model_dir=str(tmp_path), eval_examples=64,
                           attack_steps=2), arrays)
  assert result["model_kind"] == "original_checkpoint"
  assert (result["dataset"], result["method"], result["preprocess"]) == \
      ("mnist", "anp_vs", "pixel")
  assert result["n_active"] == [int((original_mask(values, f"bbd{i}") > 0).sum())
                                for i in range(1, 5)]
  logits, _ = lenet_original_forward(values, arrays[2][:64].reshape(64, -1) / 255.0)
  want = float(np.mean(np.argmax(logits, -1) == arrays[3][:64]))
  assert result["clean_acc"] == pytest.approx(want)
  assert os.path.isfile(tmp_path / "eval.json") and os.path.isfile(tmp_path / "eval.md")
