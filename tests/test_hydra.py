"""HYDRA (--method=hydra) and its LWM baseline: top-k masks, score initialisation, stages,
honest weight counts, exports, and the pretrain -> prune -> finetune chain through main.py."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from anp.deploy import compact, efficiency
from anp.deploy import card
from anp.deploy.export import pruning_report, save_for_serving
from anp.deploy.sparse import SparseKernel
from anp.evaluation import tables
from anp.methods import hydra
from anp.config import Config
from anp.errors import UserError
from anp.runs.rundir import build_net, load_run
from anp.training.train import make_trainer, run_train
from models.subnet import (SubnetConv2D, SubnetDense, TopKMask, fixed_masks, hydra_masks,
                           kernel_of, n_kept, subnet_layers, topk_mask)
from tests.helpers import SHARED_DATA, have_real_data, interrupted_and_resumed, mnist_slice

needs_data = pytest.mark.skipif(not have_real_data(),
                                reason=f"real MNIST not found in {SHARED_DATA}")


def hydra_cfg(**kw):
  return Config(**{**dict(dataset="mnist", method="hydra", train_attack_steps=2,
                          hydra_objective="at"), **kw}).resolved()


# ----------------------------------------------------------------------------------------------
# The defining maths.


@pytest.mark.parametrize("shape,ratio", [((5, 5, 3, 7), 0.9), ((40, 30), 0.5), ((13,), 0.99),
                                         ((800, 500), 0.999)])
def test_topk_keeps_exactly_k_per_layer_the_largest_magnitudes(shape, ratio):
  scores = tf.random.stateless_normal(shape, [1, 2])
  mask = topk_mask(scores, ratio).numpy()
  n = int(np.prod(shape))
  k = n - math.floor(ratio * n + 1e-9)  # HYDRA: n - int((1 - k_hydra) n), k_hydra = 1 - ratio
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert mask.sum() == k
  kept, dropped = np.abs(scores.numpy())[mask == 1], np.abs(scores.numpy())[mask == 0]
  assert dropped.size == 0 or kept.min() >= dropped.max()


def test_topk_mask_equals_tf_top_k_ties_included():
  for scores in (tf.random.stateless_normal([1000], [0, 7]),
                 tf.round(tf.random.stateless_normal([1000], [0, 8]) * 3),  # many ties
                 tf.zeros([1000])):
    for ratio in (0.0, 0.3, 0.9, 0.999):
      k = n_kept(1000, ratio)
      _, idx = tf.math.top_k(tf.abs(scores), k)
      want = np.zeros(1000, np.float32)
      want[idx.numpy()] = 1
      np.testing.assert_array_equal(topk_mask(scores, ratio).numpy(), want)


def test_prune_ratio_is_the_fraction_removed():
  assert n_kept(1000, 0.9) == 100 and n_kept(1000, 0.99) == 10 and n_kept(20, 0.99) == 1
  assert n_kept(10, 0.0) == 10
  with pytest.raises(ValueError, match="Expected 0 <= prune_ratio < 1"):
    n_kept(10, 1.0)


def test_gradient_reaches_the_scores_straight_through():
  # y = sum(c * (w * m(s))): straight through, dL/ds = c * w * sign(s) on every entry, kept or
  # not (HYDRA's GetSubnet passes the gradient of the mask to |s| unchanged).
  s = tf.Variable(tf.random.stateless_normal([6, 4], [3, 4]))
  w = tf.random.stateless_normal([6, 4], [5, 6])
  c = tf.random.stateless_normal([6, 4], [7, 8])
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(c * w * topk_mask(s, 0.75))
  grad = tape.gradient(y, s).numpy()
  np.testing.assert_allclose(grad, (c * w * tf.sign(s)).numpy(), rtol=1e-6)
  assert np.count_nonzero(grad) == s.shape.num_elements()


def test_subnet_layers_compute_with_the_masked_kernel_and_feed_the_scores():
  conv = SubnetConv2D(4, 3, padding="same", prune_ratio=0.8)
  dense = SubnetDense(5, prune_ratio=0.5)
  x = tf.random.stateless_uniform([2, 6, 6, 3], [0, 1])
  conv(x), dense(tf.zeros([2, 7]))
  for layer in (conv, dense):
    layer.scores.assign(tf.random.stateless_normal(layer.kernel.shape, [9, 9]))
  assert conv.positions == 36 and dense.positions == 1
  want = tf.nn.conv2d(x, conv.kernel * topk_mask(conv.scores, 0.8, False), 1, "SAME") + conv.bias
  np.testing.assert_allclose(conv(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(conv(x) ** 2)
  g = tape.gradient(loss, conv.scores)
  assert np.count_nonzero(g.numpy()) > 0.9 * g.shape.num_elements()
  assert np.count_nonzero(kernel_of(dense).numpy()) == 7 * 5 - math.floor(0.5 * 35)


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_attack_fn_computes_the_masks_once_with_the_same_logits_and_gradients(granularity):
  net = build_net(hydra_cfg(dataset="cifar10", hydra_granularity=granularity, prune_ratio=0.9))
  hydra.init_scores(net)
  x = tf.random.stateless_uniform([2, 32, 32, 3], [5, 5])
  fn = net.attack_fn()
  for f in (fn, lambda t: net(t, training=False)):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = f(x)
    if f is fn:
      want, want_grad = out, tape.gradient(out, x)
  np.testing.assert_array_equal(want.numpy(), out.numpy())
  np.testing.assert_array_equal(want_grad.numpy(), tape.gradient(out, x).numpy())
  calls = []
  original = tf.raw_ops.NthElement
  try:
    tf.raw_ops.NthElement = lambda **kw: calls.append(1) or original(**kw)
    fn = net.attack_fn()
    n_masks = len(calls)
    fn(x), fn(x)
  finally:
    tf.raw_ops.NthElement = original
  assert n_masks == 15 and len(calls) == 15


def test_fixed_masks_fix_the_layers_of_the_given_net_only_and_give_the_outer_ones_back():
  # Two nets of the same shapes, each Dense kernel [6, 4] -> TopKMask of 4 units, half pruned.
  nets = [keras.Sequential([keras.Input((6,)), SubnetDense(4, prune_ratio=0.5, use_bias=False),
                            TopKMask(prune_ratio=0.5)]) for _ in range(2)]
  for i, net in enumerate(nets):
    for j, v in enumerate(net.weights):
      v.assign(tf.random.stateless_normal(v.shape, [i, j]))
  a, b = nets
  x = tf.random.stateless_normal([3, 6], [7, 7])
  own = [net(x).numpy() for net in nets]
  kept_all = (x @ b.layers[0].kernel).numpy()  # b with every entry and unit kept
  assert not np.allclose(own[1], kept_all)
  ones = tf.nest.map_structure(tf.ones_like, hydra_masks(a))  # a's shapes, every entry kept
  with fixed_masks(b, ones):  # given for b: b's layers take them, a's are untouched
    np.testing.assert_array_equal(a(x).numpy(), own[0])
    np.testing.assert_allclose(b(x).numpy(), kept_all, rtol=1e-6)
    with fixed_masks(b):
      np.testing.assert_array_equal(b(x).numpy(), own[1])
    np.testing.assert_allclose(b(x).numpy(), kept_all, rtol=1e-6)  # the outer masks are back
  for net, want in zip(nets, own):  # nothing is left after the block
    np.testing.assert_array_equal(net(x).numpy(), want)


def test_channel_mask_is_topk_units_in_training_and_inference():
  mask = TopKMask(prune_ratio=0.6)
  x = tf.ones([2, 3, 3, 10])
  mask(x)
  mask.scores.assign(tf.constant([0.1, -5, 3, 0.2, -0.05, 4, 1, 0, 2, -0.3]))
  keep = mask.keep().numpy()
  np.testing.assert_array_equal(np.flatnonzero(keep), [1, 2, 5, 8])
  for training in (False, True):
    np.testing.assert_array_equal(mask(x, training=training).numpy()[0, 0, 0], keep * 1.0)
  assert int(mask.n_active()) == 4 and float(mask.kl()) == 0.0


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_scores_start_scaled_to_the_weights_so_the_first_mask_is_magnitude_pruning(granularity):
  net = build_net(hydra_cfg(hydra_granularity=granularity, prune_ratio=0.9))
  hydra.init_scores(net)
  if granularity == "weight":
    for layer in subnet_layers(net):
      w = layer.kernel.numpy()
      fan_in = int(np.prod(w.shape[:-1]))
      np.testing.assert_allclose(layer.scores.numpy(),
                                 math.sqrt(6 / fan_in) * w / np.abs(w).max(), rtol=1e-6)
      kept = np.abs(w)[layer.kernel_mask().numpy() == 1]
      assert kept.min() >= np.abs(w)[layer.kernel_mask().numpy() == 0].max()
  else:
    w = np.abs(net.conv2.kernel.numpy()).mean(axis=(0, 1, 2))  # mean |filter| of conv2
    np.testing.assert_array_equal(np.flatnonzero(net.masks[1].keep().numpy()),
                                  np.sort(np.argsort(-w)[:5]))


# ----------------------------------------------------------------------------------------------
# Stages: what trains.


def _steps(cfg, net, n=3):
  x = tf.random.stateless_uniform([16, 28, 28, 1], [1, 1])
  y = tf.range(16) % 10
  trainer = make_trainer(net, cfg, n_train=60000, total_steps=100)
  step = tf.function(trainer.train_step)
  return [float(step((x, y))["loss"]) for _ in range(n)]


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_prune_stage_trains_only_the_scores_and_finetune_only_the_weights(granularity):
  cfg = hydra_cfg(hydra_granularity=granularity, prune_ratio=0.7)
  net = build_net(cfg)
  hydra.init_scores(net)
  scores = hydra.score_variables(net)
  others = [v for v in net.trainable_variables if all(v is not s for s in scores)]
  before = {v.path: v.numpy().copy() for v in net.trainable_variables}
  assert np.all(np.isfinite(_steps(cfg, net)))
  for v in scores:
    assert not np.array_equal(before[v.path], v.numpy()), v.path
  for v in others:  # LeNet has no batch norm: nothing else moves
    np.testing.assert_array_equal(before[v.path], v.numpy(), err_msg=v.path)

  ft = hydra_cfg(hydra_granularity=granularity, prune_ratio=0.7, hydra_stage="finetune")
  before = {v.path: v.numpy().copy() for v in net.trainable_variables}
  masks_before = ([m.numpy() for m in (l.kernel_mask() for l in subnet_layers(net))]
                  + [m.keep().numpy() for m in net.masks])
  _steps(ft, net)
  for v in scores:
    np.testing.assert_array_equal(before[v.path], v.numpy(), err_msg=v.path)
  assert all(not np.array_equal(before[v.path], v.numpy()) for v in others)
  masks_after = ([m.numpy() for m in (l.kernel_mask() for l in subnet_layers(net))]
                 + [m.keep().numpy() for m in net.masks])
  for a, b in zip(masks_before, masks_after):
    np.testing.assert_array_equal(a, b)


def test_vgg_prune_stage_also_trains_batch_norm_as_the_reference():
  net = build_net(hydra_cfg(dataset="cifar10"))
  paths = sorted(v.path.split("/", 1)[1] for v in hydra.stage_variables(net, "prune"))
  assert len(paths) == 15 + 2 * 14  # 13 conv + 2 dense score tensors, 14 BN gamma/beta
  assert all(p.endswith(("scores", "gamma", "beta")) for p in paths)


def test_vgg_prune_step_moves_scores_and_batch_norm_not_the_kernels():
  cfg = hydra_cfg(dataset="cifar10", train_attack_steps=1, prune_ratio=0.99)
  net = build_net(cfg)
  hydra.init_scores(net)
  trainer = make_trainer(net, cfg, n_train=50000, total_steps=10)
  before = {v.path: v.numpy().copy() for v in net.trainable_variables}
  x, y = tf.random.stateless_uniform([4, 32, 32, 3], [2, 3]), tf.range(4)
  assert np.isfinite(float(trainer.train_step((x, y))["loss"]))
  for v in net.trainable_variables:
    moved = not np.array_equal(before[v.path], v.numpy())
    assert moved == v.path.endswith(("scores", "gamma", "beta")), v.path
  assert efficiency.weight_efficiency(net)["sparsity"] == pytest.approx(0.99, abs=1e-4)


def test_weight_efficiency_counts_the_zeroed_weights():
  net = build_net(hydra_cfg(prune_ratio=0.75))
  hydra.init_scores(net)
  eff = efficiency.weight_efficiency(net)
  kernels = [kernel_of(l).numpy() for l in subnet_layers(net)]
  nnz, total = sum(np.count_nonzero(k) for k in kernels), sum(k.size for k in kernels)
  assert eff["weights_kept"] == nnz and eff["weights_total"] == total == 430500
  assert eff["sparsity"] == pytest.approx(1 - nnz / total)
  biases = 20 + 50 + 500 + 10
  assert eff["memory_pct"] == pytest.approx(100 * (nnz + biases) / (total + biases))
  macs = [24 * 24, 8 * 8, 1, 1]
  assert eff["flops_ratio"] == pytest.approx(
      sum(k.size * m for k, m in zip(kernels, macs))
      / sum(np.count_nonzero(k) * m for k, m in zip(kernels, macs)))
  assert efficiency.weight_efficiency(build_net(Config(method="standard").resolved())) is None


def test_other_methods_build_the_same_plain_layers():
  for method in ("standard", "at", "anp_vs"):
    net = build_net(Config(method=method).resolved())
    assert type(net.conv1).__name__ == "Conv2D" and type(net.dense3).__name__ == "Dense"
    assert not subnet_layers(net) and net.hydra is None
    assert all(not v.path.endswith("scores") for v in net.variables)


# ----------------------------------------------------------------------------------------------
# Exports and names.


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_channel_export_is_smaller_and_weight_export_stores_the_kept_weights(dataset):
  shape = (28, 28, 1) if dataset == "mnist" else (32, 32, 3)
  x = tf.random.stateless_uniform((8,) + shape, [4, 2])
  for granularity in ("channel", "weight"):
    net = build_net(hydra_cfg(dataset=dataset, hydra_granularity=granularity, prune_ratio=0.6))
    for v in hydra.score_variables(net):  # scores unrelated to the weights
      v.assign(tf.random.stateless_normal(v.shape, [len(v.path), 0]))
    small = compact.compact_model(net)
    np.testing.assert_allclose(small(x).numpy(), net(x, training=False).numpy(), atol=2e-4)
    dense_params = efficiency.count_params(net.weights, exclude=net.mask_variables)
    if granularity == "channel":
      assert efficiency.count_params(small.weights) < 0.6 * dense_params
      assert net.n_active() == [n - math.floor(0.6 * n + 1e-9) for n in net.unit_counts]
    else:  # 40% of each kernel left: stored dense (a sparse kernel would not halve it)
      counts = efficiency.weight_efficiency(net)
      assert counts["weights_kept"] <= counts["weights_total"] * 0.4 + 16
      assert not any(isinstance(layer, SparseKernel) for layer in small.layers)
      assert efficiency.served_params(small) <= dense_params


def test_weight_pruned_lenet_loses_its_disconnected_units():
  """Units without incoming weights fold into the next bias, units without outgoing ones go;
  the logits stay. Every weight kept by the scores (ratio 0), the zeros set by hand."""
  net = build_net(hydra_cfg(hydra_granularity="weight", prune_ratio=0.0))
  rng = np.random.default_rng(0)
  for layer in (net.conv1, net.conv2, net.dense3, net.dense4):
    layer.bias.assign(rng.uniform(0.1, 0.5, layer.bias.shape).astype(np.float32))
  k1, k2 = net.conv1.kernel.numpy(), net.conv2.kernel.numpy()
  k3, k4 = net.dense3.kernel.numpy(), net.dense4.kernel.numpy()
  k1[..., 3] = 0.0      # conv1 filter 3: no input, a constant into conv2's bias
  k2[:, :, 5, :] = 0.0  # conv1 filter 5: read by nobody
  k2[..., 7] = 0.0      # conv2 channel 7: no input, its 16 features into dense3's bias
  k3[:, 10] = 0.0       # dense3 unit 10: no input, a constant into dense4's bias
  k4[11] = 0.0          # dense3 unit 11: read by nobody
  k3[17] = 0.0          # one flattened feature read by nobody
  for layer, k in ((net.conv1, k1), (net.conv2, k2), (net.dense3, k3), (net.dense4, k4)):
    layer.kernel.assign(k)
  x = tf.random.stateless_uniform((16, 28, 28, 1), [4, 5])
  small = compact.compact_model(net)
  assert compact.served_units(small) == [18, 49, 800 - 16 - 1, 498]
  np.testing.assert_allclose(small(x).numpy(), net(x, training=False).numpy(), atol=1e-4)


def test_weight_pruned_vgg_loses_its_disconnected_channels():
  """VGG-16: a channel without inputs becomes relu(BN(bias)), folded into the next layer (a
  per-position map: zero padding); a channel or fc1 unit without outputs goes."""
  net = build_net(hydra_cfg(dataset="cifar10", hydra_granularity="weight", prune_ratio=0.0))
  rng = np.random.default_rng(1)
  for block in net.blocks + [dict(conv=net.dense_fc1, bn=net.bn_fc1)]:
    block["conv"].bias.assign(rng.uniform(0.1, 0.5, block["conv"].bias.shape).astype(np.float32))
    bn = block["bn"]  # statistics as after training, so that BN(bias) is no special value
    bn.moving_mean.assign(rng.uniform(-0.2, 0.2, bn.moving_mean.shape).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape).astype(np.float32))
    bn.beta.assign(rng.uniform(0.0, 0.3, bn.beta.shape).astype(np.float32))
  kernels = {name: layer.kernel.numpy() for name, layer in
             (("c2", net.blocks[1]["conv"]), ("c3", net.blocks[2]["conv"]),
              ("c13", net.blocks[12]["conv"]), ("f1", net.dense_fc1), ("f2", net.dense_fc2))}
  kernels["c2"][..., 5] = 0.0       # conv2 channel 5: no input, a constant map into conv3
  kernels["c3"][:, :, 7, :] = 0.0   # conv2 channel 7: read by nobody
  kernels["c13"][..., 9] = 0.0      # conv13 channel 9: no input, a constant into fc1's bias
  kernels["f1"][:, 3] = 0.0         # fc1 unit 3: no input, a constant into fc2's bias
  kernels["f2"][4] = 0.0            # fc1 unit 4: read by nobody
  for name, layer in (("c2", net.blocks[1]["conv"]), ("c3", net.blocks[2]["conv"]),
                      ("c13", net.blocks[12]["conv"]), ("f1", net.dense_fc1),
                      ("f2", net.dense_fc2)):
    layer.kernel.assign(kernels[name])
  x = tf.random.stateless_uniform((4, 32, 32, 3), [4, 6])
  small = compact.compact_model(net)
  units = compact.served_units(small)
  assert units[1] == 62 and units[12] == 511 and units[13] == 511 and units[14] == 510, units
  assert any(isinstance(layer, compact.AddMap) for layer in small.layers)
  np.testing.assert_allclose(small(x).numpy(), net(x, training=False).numpy(), atol=1e-3,
                             rtol=1e-4)


def test_weight_export_serves_the_same_logits_from_fewer_bytes(tmp_path):
  """The SavedModel and the .keras file of a weight-pruned compact model (90% pruned)."""
  cfg = hydra_cfg(hydra_granularity="weight", prune_ratio=0.9)
  net = build_net(cfg)
  for v in hydra.score_variables(net):
    v.assign(tf.random.stateless_normal(v.shape, [len(v.path), 1]))
  x = tf.random.stateless_uniform((8, 28, 28, 1), [4, 3])
  small = compact.compact_model(net)
  assert any(isinstance(layer, SparseKernel) for layer in small.layers)
  counts = efficiency.weight_efficiency(net)
  assert efficiency.served_params(small) <= \
      efficiency.count_params(net.weights, exclude=net.mask_variables) \
      - counts["weights_total"] + counts["weights_kept"]
  assert efficiency.weight_bytes(small) < 0.25 * efficiency.weight_bytes(
      compact.compact_model(net, sparse=False))
  serve = tf.saved_model.load(save_for_serving(small, str(tmp_path / "export"), (28, 28, 1))
                              ).signatures["serving_default"]
  np.testing.assert_allclose(serve(images=x)["logits"].numpy(),
                             net(x, training=False).numpy(), atol=1e-5)
  small.save(tmp_path / "small.keras")
  loaded = keras.models.load_model(tmp_path / "small.keras")
  np.testing.assert_array_equal(loaded(x).numpy(), small(x).numpy())
  # pruning.json and the model card count what is served, the zeros' FLOPs included.
  report = pruning_report(net, small, cfg, x)
  assert report["params"]["compact"] == efficiency.served_params(small)
  plain = build_net(cfg, masked=False)  # the architecture without HYDRA layers
  assert report["flops"]["dense"] == efficiency.forward_flops(
      lambda t: plain(t, training=False), (28, 28, 1)) > report["flops"]["compact"]
  assert [layer["kept"] for layer in report["layers"]] == compact.served_units(small)
  text = "\n".join(card._efficiency(report, []))
  counts = report["weight_pruning"]
  assert f"Weights kept: {counts['weights_kept']:,} of the" in text and "Units kept" not in text
  assert f"{report['params']['bytes'] / 1024:.1f} KiB of weights" in text
  assert f"x{counts['flops_ratio']:.2f} fewer" in text


def test_table_names_hydra_and_lwm_rows():
  cfg = hydra_cfg(hydra_stage="finetune", prune_ratio=0.99)
  result = dict(method="hydra", hydra=hydra.row_settings(cfg))
  assert tables.model_name(result) == "HYDRA 99%"
  cfg = hydra_cfg(hydra_stage="finetune", hydra_scores="magnitude", hydra_granularity="channel")
  assert tables.model_name(dict(method="hydra", hydra=hydra.row_settings(cfg))) == \
      "LWM 90% channels"
  assert tables.model_name(dict(method="hydra", hydra=hydra.row_settings(hydra_cfg()))) == \
      "HYDRA 90% (prune stage)"
  printed = tables.format_table(dict(
      result, attack=dict(name="pgd", steps=40, attacks=["pgd"]), clean_acc=0.9, adv_acc=0.5,
      vulnerability=0.1, sparsity=0.9, n_active=None, n_units=None,
      weight_pruning=dict(weights_kept=43050, weights_total=430500)))
  assert "Sparsity (%)" in printed and "43,050 of 430,500" in printed


def test_a_finetune_that_prunes_nothing_is_named_as_the_dense_control_it_is():
  settings = hydra.row_settings(hydra_cfg(hydra_stage="finetune", hydra_scores="magnitude",
                                          hydra_objective="adv", prune_ratio=0.0))
  assert hydra.row_name(dict(settings, source_method="at")) == "AT + CE(x_adv), dense"
  assert hydra.row_name(dict(settings, source_method=None)) == "LWM + CE(x_adv), dense"
  assert hydra.row_name(dict(settings, prune_ratio=0.8, source_method="admm")) == "ADMM 80%"


@pytest.mark.parametrize("stage,lr", [("prune", 0.1), ("finetune", 0.01)])
def test_sgd_is_the_references_sgd_with_its_per_epoch_cosine(stage, lr):
  """inspire-group/hydra: SGD momentum 0.9, lr 0.1 (prune) / 0.01 (finetune README command),
  set per epoch e (0-based) to lr (1 + cos((e - 1) / epochs pi)) / 2 (utils/schedules.py)."""
  import keras
  epochs, spe = 5, 3
  cfg = hydra_cfg(hydra_optimizer="sgd", hydra_stage=stage, epochs=epochs)
  assert cfg.hydra_lr == lr
  trainer = make_trainer(build_net(cfg), cfg, n_train=60000, total_steps=epochs * spe)
  opt = trainer.optimizer
  assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == pytest.approx(0.9)
  for step in range(epochs * spe):
    e = step // spe
    want = lr * 0.5 * (1 + math.cos((e - 1) / epochs * math.pi))
    opt.iterations.assign(step)
    assert float(opt.learning_rate) == pytest.approx(want, rel=1e-6), step
  assert hydra_cfg(hydra_optimizer="sgd", hydra_lr=0.05).hydra_lr == 0.05
  default = hydra_cfg(hydra_stage=stage)  # Adam 1e-3 with the staircase, as before
  assert (default.hydra_optimizer, default.hydra_lr) == ("adam", 1e-3)
  assert isinstance(make_trainer(build_net(default), default, 60000, 10).optimizer,
                    keras.optimizers.Adam)
  with pytest.raises(UserError, match="--hydra_lr"):
    hydra_cfg(hydra_lr=0.0)


def _documented_commands(heading):
  """The shell commands (continuation lines joined) of the first code block after `heading` in
  docs/methods.md."""
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "methods.md")) as f:
    text = f.read()
  block = text[text.index(heading):]
  block = block[block.index("```bash") + len("```bash"):]
  block = block[:block.index("```")].replace("\\\n", " ")
  return [line.split("#")[0] for line in block.splitlines() if "main.py" in line]


def test_documented_hydra_commands_use_the_references_epochs():
  """inspire-group/hydra's README: 20 epochs of pruning, then 100 of finetuning (LWM too)."""
  stages = {}
  for line in _documented_commands("**HYDRA** (`--method=hydra`"):
    if "--method=hydra" in line:
      stage = "prune" if "--hydra_stage=prune" in line else "finetune"
      stages.setdefault(stage, []).append(line)
      assert f"--epochs={20 if stage == 'prune' else 100} " in line + " ", line
  assert len(stages["prune"]) == 1 and len(stages["finetune"]) == 2


def test_bad_hydra_settings_are_user_errors():
  with pytest.raises(UserError, match="--hydra_scores"):
    hydra_cfg(hydra_scores="magnitude")  # LWM is a finetune stage
  with pytest.raises(UserError, match="--prune_ratio.*Received: 1.0"):
    hydra_cfg(prune_ratio=1.0)
  with pytest.raises(UserError, match="--init_from is required"):
    run_train(hydra_cfg(model_dir="/tmp/never_written_hydra"), arrays=())
  assert not os.path.exists("/tmp/never_written_hydra")


# ----------------------------------------------------------------------------------------------
# Real MNIST: the three stages, resume, and main.py's modes.


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hydra") / "at")
  run_train(Config(mode="train", dataset="mnist", method="at", epochs=1, steps_per_epoch=30,
                   train_attack_steps=3, val_examples=0, model_dir=path), mnist_slice())
  return path


@needs_data
@pytest.mark.slow
def test_finetune_needs_a_prune_run_of_the_same_settings(pretrained, tmp_path):
  common = dict(mode="train", epochs=1, steps_per_epoch=2, val_examples=0)
  with pytest.raises(UserError, match="expected a --method=hydra --hydra_stage=prune run"):
    run_train(hydra_cfg(hydra_stage="finetune", init_from=pretrained,
                        model_dir=str(tmp_path / "ft"), **common), mnist_slice())
  prune = str(tmp_path / "prune")
  run_train(hydra_cfg(init_from=pretrained, model_dir=prune, **common), mnist_slice())
  with pytest.raises(UserError, match="--prune_ratio: expected the prune run's value, 0.9"):
    run_train(hydra_cfg(hydra_stage="finetune", init_from=prune, prune_ratio=0.5,
                        model_dir=str(tmp_path / "ft"), **common), mnist_slice())


@needs_data
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.slow
def test_prune_stage_resumes_exactly(pretrained, tmp_path, monkeypatch, optimizer):
  def run(model_dir):
    return run_train(hydra_cfg(mode="train", init_from=pretrained, epochs=2, steps_per_epoch=3,
                               checkpoint_every=2, val_examples=0, model_dir=model_dir,
                               hydra_optimizer=optimizer),
                     mnist_slice())
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  log, resumed, names = interrupted_and_resumed(run, straight, split, monkeypatch)
  assert resumed == log
  assert any("scores" in n for n in names)
  # The scores moved, the weights did not, and the mask is still top-k.
  net, _ = load_run(straight)
  at_net, _ = load_run(pretrained)
  np.testing.assert_array_equal(net.dense3.kernel.numpy(), at_net.dense3.kernel.numpy())
  assert log[-1]["weight_sparsity"] == pytest.approx(1 - 43050 / 430500)


@needs_data
@pytest.mark.slow
def test_main_runs_the_chain_eval_export_and_report(pretrained, tmp_path):
  """prune -> finetune (main.py's flags, in a subprocess) and LWM, then --mode=prune, eval and
  report through main.run; channel granularity, 50% of every site."""
  import main
  from tests.test_train import run_main
  root = str(tmp_path)
  common = dict(dataset="mnist", data_dir=SHARED_DATA, epochs=1, steps_per_epoch=3,
                val_examples=0, train_attack_steps=2, hydra_granularity="channel",
                prune_ratio=0.5, hydra_objective="at")
  main.run(Config(mode="train", method="hydra", init_from=pretrained, model_dir=f"{root}/p",
                  **common))
  main.run(Config(mode="train", method="hydra", hydra_stage="finetune",
                  hydra_scores="magnitude", init_from=pretrained, model_dir=f"{root}/lwm",
                  **common))
  out = run_main("--mode=train", "--method=hydra", "--hydra_stage=finetune",
                 f"--init_from={root}/p", f"--model_dir={root}/f",
                 *(f"--{k}={v}" for k, v in common.items()))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "units kept [10, 25, 400, 250] of [20, 50, 800, 500]" in out.stdout
  main.run(Config(mode="prune", model_dir=f"{root}/f", export_dir=f"{root}/export",
                  data_dir=SHARED_DATA, eval_examples=64))
  pruning = json.load(open(os.path.join(root, "export", "pruning.json")))
  assert pruning["params"]["compact"] < 0.3 * pruning["params"]["dense"]
  assert pruning["max_abs_logit_diff"] < 1e-4
  results = {run: main.run(Config(mode="eval", model_dir=f"{root}/{run}", data_dir=SHARED_DATA,
                                  eval_examples=64, attack_steps=3))
             for run in ("f", "lwm", "export/1")}
  assert results["f"]["sparsity"] == pytest.approx(0.5)
  assert results["f"]["sparsity_of"] == "units"
  assert results["export/1"]["clean_acc"] == results["f"]["clean_acc"]
  main.run(Config(mode="report", runs=f"{root}/f,{root}/lwm", report_dir=f"{root}/rep"))
  report = open(os.path.join(root, "rep", "report.md")).read()
  assert "| HYDRA 50% channels |" in report and "| LWM 50% channels |" in report


def test_eval_counts_the_units_a_weight_pruned_net_still_uses():
  """eval.json's units kept of a weight-pruned net are those its compact export serves; its
  Sparsity, Memory and Flops count the zeroed weights."""
  from anp.evaluation.evaluate import size_columns
  cfg = hydra_cfg(hydra_granularity="weight", prune_ratio=0.99)
  net = build_net(cfg)
  hydra.init_scores(net)
  cols = size_columns(net, "run", None, "lenet", 10)
  served = compact.served_units(compact.compact_model(net))
  assert cols["n_active"] == served and cols["n_units"] == list(net.unit_counts)
  assert any(k < n for k, n in zip(served, net.unit_counts)), served  # 99%: some cut off
  weights = efficiency.weight_efficiency(net)
  assert cols["sparsity_of"] == "weights" and cols["weight_pruning"] == weights
  assert cols["sparsity_pct"] == pytest.approx(100 * weights["sparsity"])
  assert cols["memory_pct"] == weights["memory_pct"]
  # A unit-masked net: its masks decide.
  plain = build_net(Config(dataset="mnist", method="anp_vs").resolved())
  cols = size_columns(plain, "run", None, "lenet", 10)
  assert cols["sparsity_of"] == "units" and cols["n_active"] == plain.n_active()
