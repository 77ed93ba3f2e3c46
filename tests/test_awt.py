"""AWT's ticket search (--method=awt, anp/awt.py): the NTK estimator, the loss at the teacher,
the magnitude re-masks, what a step trains, resume, and the search -> finetune -> eval chain."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from anp.evaluation import tables
from anp.methods import awt
from anp.config import Config
from anp.errors import UserError
from anp.runs.rundir import RunError, build_net, load_run
from anp.training.train import make_trainer, run_train
from models.subnet import SubnetDense, kernel_of, n_kept, subnet_layers, topk_mask
from tests.helpers import SHARED_DATA, have_real_data, interrupted_and_resumed, mnist_slice

needs_data = pytest.mark.skipif(not have_real_data(),
                                reason=f"real MNIST not found in {SHARED_DATA}")


def awt_cfg(**kw):
  return Config(**{**dict(dataset="mnist", method="awt", train_attack_steps=2,
                          awt_ntk_examples=2, batch_size=8), **kw}).resolved()


def batch(n=8, seed=1):
  return tf.random.stateless_uniform([n, 28, 28, 1], [seed, 1]), tf.range(n) % 10


def values(variables):
  return [v.numpy().copy() for v in variables]


# ----------------------------------------------------------------------------------------------
# The NTK estimator and the loss.


def tiny_net(dtype="float32"):
  """3 -> 4 (tanh) -> 3, one layer a Subnet layer with half of its weights pruned."""
  net = keras.Sequential([keras.layers.Dense(4, activation="tanh", dtype=dtype),
                          SubnetDense(3, prune_ratio=0.5, dtype=dtype)])
  net(tf.zeros([1, 3], dtype))
  layer = net.layers[1]
  layer.scores.assign(tf.random.stateless_normal(layer.kernel.shape, [3, 3], dtype=dtype))
  return net


def test_projected_ntk_equals_the_brute_force_full_jacobian_contraction():
  net = tiny_net()
  x1 = tf.random.stateless_normal([3, 3], [1, 2])
  x2 = tf.random.stateless_normal([2, 3], [3, 4])
  v = awt.direction(tf.constant([5, 6], tf.int64), 3)
  assert float(tf.norm(v)) == pytest.approx(1.0)
  params = [net.layers[0].kernel, net.layers[0].bias, net.layers[1].kernel, net.layers[1].bias]
  theta = awt.projected_ntk(net, params, x1, x2, v)
  # Brute force: the full Jacobian of every output, J [n, C, P], then
  # Theta[i, j] = sum_ab v_a v_b <J[i, a], J[j, b]>.

  def jacobian(x):
    rows = []
    for i in range(x.shape[0]):
      with tf.GradientTape(persistent=True) as tape:
        out = [net(x[i:i + 1])[0, a] for a in range(3)]
      rows.append(np.stack([np.concatenate([g.numpy().ravel() for g in tape.gradient(
          out[a], params)]) for a in range(3)]))
    return np.stack(rows)
  j1, j2 = jacobian(x1), jacobian(x2)
  full = np.einsum("iap,jbp->ijab", j1, j2)  # the [n1, n2, C, C] NTK of NTT
  want = np.einsum("ijab,a,b->ij", full, v.numpy(), v.numpy())
  np.testing.assert_allclose(theta.numpy(), want, rtol=1e-5, atol=1e-6)
  # The pruned kernel entries have zero gradient: the NTK is the masked network's.
  mask = net.layers[1].kernel_mask().numpy().ravel()
  kernel_cols = slice(3 * 4 + 4, 3 * 4 + 4 + 12)
  assert np.all(j1[:, :, kernel_cols][:, :, mask == 0] == 0)
  assert np.any(j1[:, :, kernel_cols][:, :, mask == 1] != 0)


def test_ntk_distance_gradient_matches_finite_differences():
  net, frozen = tiny_net("float64"), tiny_net("float64")
  frozen.set_weights([w * 1.3 for w in net.get_weights()])
  x1 = tf.random.stateless_normal([2, 3], [1, 2], dtype=tf.float64)
  x2 = tf.random.stateless_normal([2, 3], [3, 4], dtype=tf.float64)
  v = tf.cast(awt.direction(tf.constant([5, 6], tf.int64), 3), tf.float64)
  params = [w for w in net.trainable_weights if not w.path.endswith("scores")]
  target = awt.projected_ntk(frozen, [w for w in frozen.trainable_weights
                                      if not w.path.endswith("scores")], x1, x2, v)

  def distance():
    return tf.reduce_mean(tf.square(awt.projected_ntk(net, params, x1, x2, v) - target))
  with tf.GradientTape() as tape:
    d = distance()
  # The NTK does not depend on the output bias: zero gradient (None) there.
  grads = tape.gradient(d, [p.value for p in params],
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
  direction = [tf.random.stateless_normal(p.shape, [7, i], dtype=tf.float64)
               for i, p in enumerate(params)]
  start = [p.numpy() for p in params]
  h, moved = 1e-5, []
  for sign in (1, -1):
    for p, s, u in zip(params, start, direction):
      p.assign(s + sign * h * u.numpy())
    moved.append(float(distance()))
  for p, s in zip(params, start):
    p.assign(s)
  numeric = (moved[0] - moved[1]) / (2 * h)
  analytic = sum(float(tf.reduce_sum(g * u)) for g, u in zip(grads, direction))
  assert float(d) > 0 and analytic == pytest.approx(numeric, rel=1e-6)


def test_loss_and_gradients_are_zero_when_the_student_is_the_teacher():
  cfg = awt_cfg(prune_ratio=0.0, awt_l2=0.0)
  net = build_net(cfg)
  trainer = make_trainer(net, cfg, n_train=60000, total_steps=100)
  x_adv, _ = batch()
  v = awt.direction(tf.constant([1, 2], tf.int64), 10)
  grads, stats = trainer.search_gradients(x_adv, v)
  assert float(stats["loss"]) == 0.0
  assert float(stats["awt_output_distance"]) == 0.0 == float(stats["awt_ntk_distance"])
  assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) < 1e-12
  # The L2 term alone: awt_l2 / density * sum of the (masked) kernels' squares.
  trainer.l2 = 1e-5
  _, stats = trainer.search_gradients(x_adv, v)
  squares = sum(float(tf.reduce_sum(tf.square(kernel_of(l)))) for l in subnet_layers(net))
  assert float(stats["loss"]) == pytest.approx(1e-5 * squares, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Steps: re-masks and what trains.


def test_first_mask_is_the_magnitude_top_k_and_remasks_happen_at_their_steps_only():
  cfg = awt_cfg(awt_remask_every=2)
  net = build_net(cfg)
  trainer = make_trainer(net, cfg, n_train=60000, total_steps=4)  # no remask in the last 2
  layers = subnet_layers(net)
  for layer in layers:
    np.testing.assert_array_equal(layer.kernel_mask().numpy(),
                                  topk_mask(layer.kernel, 0.9, False).numpy())
  step = tf.function(trainer.train_step)
  kernels = [values(l.kernel for l in layers)]
  for t in range(1, 5):
    step(batch(seed=t))
    kernels.append(values(l.kernel for l in layers))
    scored = {1: 0, 2: 2, 3: 2, 4: 2}[t]  # the kernels the scores were last taken from
    for layer, k_now, k_scored in zip(layers, kernels[t], kernels[scored]):
      np.testing.assert_array_equal(layer.scores.numpy(), np.abs(k_scored))
      if scored != t:
        assert not np.array_equal(np.abs(k_now), layer.scores.numpy())
      else:
        np.testing.assert_array_equal(layer.kernel_mask().numpy(),
                                      topk_mask(k_now, 0.9, False).numpy())
      mask = layer.kernel_mask().numpy()
      assert mask.sum() == n_kept(mask.size, 0.9)


def test_a_step_trains_the_kept_weights_not_the_teacher_nor_the_scores():
  cfg = awt_cfg()
  net = build_net(cfg)
  trainer = make_trainer(net, cfg, n_train=60000, total_steps=1000)
  teacher = values(trainer.teacher.variables)
  for s, t in zip(net.weight_variables, trainer.teacher.weight_variables):
    np.testing.assert_array_equal(s.numpy(), t.numpy())  # the teacher is theta_0
  before = {v.path: v.numpy().copy() for v in net.variables}
  logs = tf.function(trainer.train_step)(batch())
  assert {"acc_adv", "awt_output_distance", "awt_ntk_distance"} <= set(logs)
  assert np.isfinite(float(logs["loss"])) and float(logs["awt_ntk_distance"]) > 0
  for a, b in zip(teacher, values(trainer.teacher.variables)):
    np.testing.assert_array_equal(a, b)
  for layer in subnet_layers(net):
    np.testing.assert_array_equal(before[layer.scores.path], layer.scores.numpy())
    kept = layer.kernel_mask().numpy() == 1
    moved = before[layer.kernel.path] != layer.kernel.numpy()
    assert moved[kept].mean() > 0.5, layer.name
    assert not moved[~kept].any(), layer.name  # zero gradient, Adam's first step: unchanged
    assert not np.array_equal(before[layer.bias.path], layer.bias.numpy())


def test_bad_awt_flags_are_one_line_user_errors():
  for kw, match in ((dict(awt_kernel_weight=-1.0), "--awt_kernel_weight: expected a number "
                     ">= 0. Received: -1.0"),
                    (dict(awt_l2=-1e-5), "--awt_l2: expected a number >= 0"),
                    (dict(awt_ntk_examples=0), "--awt_ntk_examples: expected an integer >= 1"),
                    (dict(awt_remask_every=0), "--awt_remask_every: expected an integer >= 1"),
                    (dict(batch_size=1), "--batch_size: expected an integer >= 2 with "
                     "--method=awt"),
                    (dict(prune_ratio=1.0), "--prune_ratio.*Received: 1.0")):
    with pytest.raises(UserError, match=match) as info:
      awt_cfg(**kw)
    assert "\n" not in str(info.value)
  from tests.test_train import run_main
  out = run_main("--method=awt", "--awt_ntk_examples=0", "--epochs=1", timeout=120)
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert "awt_ntk_examples" in out.stderr


# ----------------------------------------------------------------------------------------------
# Real MNIST: resume, the search -> finetune -> eval chain.


@needs_data
@pytest.mark.slow
def test_search_resumes_exactly_and_keeps_its_settings(tmp_path, monkeypatch):
  def run(model_dir, **kw):
    return run_train(awt_cfg(mode="train", epochs=2, steps_per_epoch=3, checkpoint_every=2,
                             val_examples=0, awt_remask_every=2, model_dir=model_dir, **kw),
                     mnist_slice())
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  log, resumed, names = interrupted_and_resumed(run, straight, split, monkeypatch)
  assert resumed == log
  assert {"awt_ntk_distance", "weight_sparsity"} <= set(log[-1])
  assert any(n.startswith("teacher/") for n in names) and any("scores" in n for n in names)
  with pytest.raises(RunError, match="--awt_l2=1e-05, not --awt_l2=0.001"):
    run(straight, awt_l2=1e-3)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
  """An AWT search at 90% on real MNIST through main.run (5 steps, a remask at step 4)."""
  import main
  path = str(tmp_path_factory.mktemp("awt") / "search")
  main.run(Config(mode="train", dataset="mnist", method="awt", data_dir=SHARED_DATA, epochs=1,
                  steps_per_epoch=5, train_attack_steps=2, val_examples=64, awt_remask_every=4,
                  model_dir=path))
  return path


@needs_data
@pytest.mark.slow
def test_finetune_of_a_search_needs_its_prune_ratio_and_weight_granularity(search, tmp_path):
  common = dict(mode="train", dataset="mnist", method="hydra", hydra_stage="finetune",
                hydra_objective="at", init_from=search, epochs=1, steps_per_epoch=2,
                val_examples=0)
  with pytest.raises(UserError, match="--prune_ratio: expected the AWT run's value, 0.9. "
                     "Received: 0.5"):
    run_train(Config(prune_ratio=0.5, model_dir=str(tmp_path / "a"), **common), mnist_slice())
  with pytest.raises(UserError, match="--hydra_granularity: expected 'weight'"):
    run_train(Config(hydra_granularity="channel", model_dir=str(tmp_path / "b"), **common),
              mnist_slice())
  assert not os.listdir(tmp_path)


@needs_data
@pytest.mark.slow
def test_main_runs_search_finetune_and_eval_named_awt(search, tmp_path):
  import main
  finetuned = str(tmp_path / "finetune")
  main.run(Config(mode="train", dataset="mnist", method="hydra", hydra_stage="finetune",
                  hydra_objective="at", init_from=search, data_dir=SHARED_DATA, epochs=1,
                  steps_per_epoch=5, train_attack_steps=2, val_examples=64,
                  model_dir=finetuned))
  net, _ = load_run(finetuned)
  found, _ = load_run(search)
  for layer, source in zip(subnet_layers(net), subnet_layers(found)):
    mask = layer.kernel_mask().numpy()
    np.testing.assert_array_equal(mask, source.kernel_mask().numpy())  # the ticket, frozen
    assert np.count_nonzero(kernel_of(layer).numpy()) == n_kept(mask.size, 0.9), layer.name
  results = {run: main.run(Config(mode="eval", model_dir=run, data_dir=SHARED_DATA,
                                  eval_examples=64, attack_steps=3))
             for run in (search, finetuned)}
  assert tables.model_name(results[finetuned]) == "AWT 90%"
  assert tables.model_name(results[search]) == "AWT search"
  for result in results.values():
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert result["sparsity_of"] == "weights"
    assert 0 <= result["adv_acc"] <= result["clean_acc"] <= 1
