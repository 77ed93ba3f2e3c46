"""Adv-BNN (--method=at_bnn): Bayesian layers, the KL to the prior, the training loss, the
sampled PGD, the ensemble prediction, exact resume, and main.py end to end on real MNIST."""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
from anp.evaluation import evaluate
from anp.config import RUN_KEYS, Config
from anp.errors import UserError
from anp.methods import bnn
from anp.methods.bnn import BNN_EOT_SAMPLES
from anp.runs.rundir import build_net
from anp.training.train import make_trainer
from models.bayesian import BayesConv2D, BayesDense, gaussian_kl, standard_normal
from tests.helpers import SHARED_DATA, have_real_data, mnist_slice

needs_data = pytest.mark.skipif(not have_real_data(),
                                reason=f"real MNIST not found in {SHARED_DATA}")


def bnn_cfg(**kw):
  return Config(**{**dict(dataset="mnist", method="at_bnn", train_attack_steps=2), **kw})


# ----------------------------------------------------------------------------------------------
# The layers and the prior.


def test_kl_matches_the_closed_form_and_a_monte_carlo_estimate():
  rng = np.random.default_rng(0)
  mu = rng.normal(0, 0.1, [50]).astype(np.float32)
  log_sigma = rng.uniform(-4, -1, [50]).astype(np.float32)
  s0 = 0.07
  sigma = np.exp(log_sigma)
  closed = np.sum(np.log(s0 / sigma) + (sigma ** 2 + mu ** 2) / (2 * s0 ** 2) - 0.5)
  assert float(gaussian_kl(mu, log_sigma, s0)) == pytest.approx(closed, rel=1e-5)
  # E_q[log q(w) - log p(w)] by sampling.
  w = mu + sigma * rng.standard_normal([20000, 50])
  log_q = -0.5 * ((w - mu) / sigma) ** 2 - np.log(sigma)
  log_p = -0.5 * (w / s0) ** 2 - np.log(s0)
  assert np.mean(np.sum(log_q - log_p, axis=1)) == pytest.approx(closed, rel=0.02)
  # Zero exactly when the posterior is the prior.
  assert float(gaussian_kl(np.zeros(5, np.float32), np.full(5, np.log(s0), np.float32),
                           s0)) == pytest.approx(0.0, abs=1e-5)


def test_standard_normal_draws_n01_as_a_pure_function_of_the_seed():
  seed = tf.constant([1, 2], tf.int64)
  x = standard_normal([1001, 301], seed).numpy()  # odd size: the last pair's sine dropped
  assert x.shape == (1001, 301) and np.all(np.isfinite(x))
  np.testing.assert_array_equal(x, standard_normal([1001, 301], seed).numpy())
  assert not np.array_equal(x, standard_normal([1001, 301], tf.constant([1, 3])).numpy())
  flat = np.sort(x.ravel())
  n = flat.size
  cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in flat[::97]])
  ks = np.max(np.abs(cdf - (np.arange(n)[::97] + 0.5) / n))
  assert ks < 1.63 / np.sqrt(n) * 2  # Kolmogorov-Smirnov, far below p = 0.01's bound x 2
  assert abs(flat.mean()) < 0.01 and abs(flat.std() - 1) < 0.01
  half = (n + 1) // 2
  halves = x.ravel()[:half - 1], x.ravel()[half:]  # cosines vs sines of the same pairs
  assert abs(np.corrcoef(halves)[0, 1]) < 0.01
  assert np.mean(np.abs(flat) > 3) == pytest.approx(0.0027, abs=0.0006)
  fresh = standard_normal([3, 4])
  assert fresh.shape == (3, 4) and not np.array_equal(fresh, standard_normal([3, 4]))


@pytest.mark.parametrize("layer,shape", [(lambda: BayesDense(3, 0.1, 0.02), [4, 6]),
                                         (lambda: BayesConv2D(3, 3, 0.1, 0.02), [2, 5, 5, 2])])
def test_layers_sample_the_posterior_and_seeds_fix_the_sample(layer, shape):
  layer = layer()
  x = tf.random.uniform(shape)
  layer(x)
  np.testing.assert_allclose(layer.kernel_log_sigma.numpy(), np.log(0.02), rtol=1e-6)
  seed = tf.constant([3, 4], tf.int64)
  np.testing.assert_array_equal(layer(x, seed=seed).numpy(), layer(x, seed=seed).numpy())
  assert not np.allclose(layer(x).numpy(), layer(x).numpy())  # unseeded: a new sample
  assert not np.allclose(layer(x, seed=seed).numpy(),
                         layer(x, seed=tf.constant([3, 5], tf.int64)).numpy())
  draws = np.stack([layer.sample_weights(tf.constant([i, 0], tf.int64))[0].numpy()
                    for i in range(500)])
  np.testing.assert_allclose(draws.mean(0), layer.kernel.numpy(), atol=0.02 * 4 / np.sqrt(500))
  np.testing.assert_allclose(draws.std(0), 0.02, rtol=0.15)
  with pytest.raises(ValueError, match="Expected prior_sigma > 0"):
    BayesDense(3, 0.0, 0.1)


def test_bayesian_lenet_doubles_parameters_and_excludes_log_sigmas_from_decay():
  net = build_net(bnn_cfg().resolved())
  assert len(net.bayes_layers) == 4 and not net.masks
  counts = bnn.parameter_counts(net)
  assert counts == dict(mean=431080, total=2 * 431080)
  assert len(net.decayed_variables) == 8 and len(net.weight_variables) == 16
  assert all("log_sigma" not in v.path for v in net.decayed_variables)
  standard = build_net(Config(dataset="mnist", method="at").resolved())
  assert not standard.bayes_layers and standard.decayed_variables == standard.weight_variables
  assert float(standard.kl()) == 0.0
  x = tf.random.uniform([3, 28, 28, 1])
  np.testing.assert_array_equal(standard(x).numpy(), standard(x, seed=tf.constant([1, 2])))


def test_lenet_attack_fn_draws_the_layers_sample_through_the_fast_ops():
  net = build_net(bnn_cfg().resolved())
  x = tf.random.uniform([5, 28, 28, 1])
  y = tf.constant([0, 1, 2, 3, 4])
  net(x)
  for layer in net.bayes_layers:  # sigmas away from their common initial value
    layer.kernel_log_sigma.assign(tf.random.uniform(layer.kernel.shape, -4.0, -1.0))
  fast = net.attack_fn()
  seed = tf.constant([5, 6], tf.int64)

  def grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, fn(x)))
    return fn(x).numpy(), tape.gradient(loss, x).numpy()

  (fast_logits, fast_grad), (ref_logits, ref_grad) = (
      grad(lambda t: fast(t, seed=seed)), grad(lambda t: net(t, training=False, seed=seed)))
  np.testing.assert_allclose(fast_logits, ref_logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(fast_grad, ref_grad, rtol=1e-4, atol=1e-6)
  other = fast(x, seed=tf.constant([5, 7], tf.int64)).numpy()
  assert not np.allclose(other, fast_logits, atol=1e-3)  # another seed: another sample
  assert not np.allclose(fast(x).numpy(), fast(x).numpy(), atol=1e-3)  # unseeded: fresh ones


def test_config_defaults_validation_and_old_runs():
  cfg = bnn_cfg().resolved()
  assert (cfg.beta, cfg.bnn_prior_sigma, cfg.bnn_init_sigma, cfg.adversarial, cfg.masked) == \
      (1.0, 0.05, 0.05, True, False)
  other = Config(dataset="mnist", method="anp_vs").resolved()
  assert (other.beta, other.bnn_prior_sigma, other.eot_samples) == (4.0, None, 1)
  # A run directory saved before these fields existed still matches on every RUN_KEY.
  old = {k: v for k, v in dataclasses.asdict(other).items() if not k.startswith("bnn_")}
  assert all(getattr(Config(**old).resolved(), k) == getattr(other, k) for k in RUN_KEYS)
  for flag, value in (("bnn_prior_sigma", 0.0), ("bnn_init_sigma", -1.0), ("bnn_ensemble", 0)):
    with pytest.raises(UserError, match=f"--{flag}: expected .* Received: {value}"):
      bnn_cfg(**{flag: value}).resolved()


# ----------------------------------------------------------------------------------------------
# Training: the loss, the attack, exactness.


def test_train_step_minimises_adversarial_ce_plus_alpha_kl_over_n():
  cfg = bnn_cfg(beta=0.5, weight_decay=1e-3).resolved()
  keras.utils.set_random_seed(0)
  net = build_net(cfg)
  trainer = make_trainer(net, cfg, n_train=1000, total_steps=100)
  x = tf.random.uniform([8, 28, 28, 1])
  y = tf.range(8) % 10
  means = [v.numpy() for v in net.decayed_variables]
  sigmas = [v.numpy().copy() for b in net.bayes_layers for v in b.log_sigma_variables]
  kl = float(net.kl())
  out = {k: float(v) for k, v in tf.function(trainer.train_step)((x, y)).items()}
  l2 = sum(float(np.sum(m ** 2)) / 2 for m in means)
  assert out["loss"] == pytest.approx(out["ce_adv"] + 0.5 * kl / 1000 + 1e-3 * l2, rel=1e-5)
  assert out["kl"] != kl  # the log-sigmas and means moved
  after = [v.numpy() for b in net.bayes_layers for v in b.log_sigma_variables]
  assert all(not np.allclose(a, b) for a, b in zip(sigmas, after))


def test_sampled_pgd_draws_one_seeded_sample_per_step():
  seen = []

  def model_fn(t, seed=None):
    seen.append(None if seed is None else tuple(seed.numpy()))
    w = tf.random.stateless_normal([784, 10], seed) if seed is not None else \
        tf.random.normal([784, 10])
    return tf.reshape(t, [-1, 784]) @ w

  x = tf.random.uniform([4, 28, 28, 1])
  y = tf.constant([0, 1, 2, 3])
  a = attacks.sampled_pgd(model_fn, x, y, 0.1, 0.02, 3, seed=7)
  assert seen == [(7, 1), (7, 2), (7, 3)]
  b = attacks.sampled_pgd(model_fn, x, y, 0.1, 0.02, 3, seed=7)
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert np.max(np.abs(a.numpy() - x.numpy())) <= 0.1 + 1e-6
  assert not np.array_equal(a.numpy(), attacks.sampled_pgd(model_fn, x, y, 0.1, 0.02, 3,
                                                       seed=8).numpy())


def test_ensemble_is_the_log_of_the_mean_softmax_and_averages_features():
  outputs = [tf.constant([[2.0, 0.0, -1.0]]), tf.constant([[0.0, 3.0, 0.0]]),
             tf.constant([[1.0, 1.0, 1.0]])]
  calls = []

  def fake(x, training=False, return_features=False):
    logits = outputs[len(calls) % 3]
    calls.append(training)
    return (logits, [logits * 2.0]) if return_features else logits

  logits, feats = bnn.ensemble_logits(fake, tf.zeros([1, 2]), 3, return_features=True)
  want = np.mean([tf.nn.softmax(o).numpy() for o in outputs], axis=0)
  np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), want, rtol=1e-6)
  np.testing.assert_allclose(np.exp(logits.numpy()).sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(feats[0].numpy(), 2.0 * np.mean(outputs, axis=0), rtol=1e-6)
  assert calls == [False] * 3


@needs_data
@pytest.mark.slow
def test_resume_mid_epoch_is_exact(tmp_path):
  from anp.training.train import run_train
  arrays = mnist_slice()
  cfg = Config(mode="train", dataset="mnist", method="at_bnn", train_attack_steps=2, epochs=2,
               steps_per_epoch=3, val_examples=32, checkpoint_every=2,
               model_dir=str(tmp_path / "run"))
  whole = run_train(cfg, arrays)
  final = tf.train.load_checkpoint(str(tmp_path / "run"))
  # As if killed after step 4 (mid epoch 2): the latest checkpoint is ckpt-4 again.
  for f in tf.io.gfile.glob(str(tmp_path / "run" / "ckpt-6*")):
    os.remove(f)
  with open(tmp_path / "run" / "checkpoint", "w") as f:
    f.write('model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
  resumed = run_train(cfg, arrays)
  assert resumed == whole
  assert "kl" in whole[-1] and "val_acc_adv" in whole[-1]
  again = tf.train.load_checkpoint(str(tmp_path / "run"))
  names = [n for n in final.get_variable_to_shape_map() if n.startswith("net/")]
  assert any("log_sigma" in n for n in names)
  for n in names:
    np.testing.assert_array_equal(final.get_tensor(n), again.get_tensor(n), err_msg=n)


# ----------------------------------------------------------------------------------------------
# main.py end to end: train, eval (EOT by default, flagged without), export, prune refused,
# report.


@needs_data
@pytest.mark.slow
def test_main_train_eval_export_report(tmp_path):
  from anp.deploy.export import load_saved_model, run_export
  from anp.evaluation.report import run_report
  from tests.test_train import run_main
  run = str(tmp_path / "run")
  out = run_main("--mode=train", "--method=at_bnn", "--dataset=mnist", "--epochs=1",
                 "--steps_per_epoch=3", "--train_attack_steps=2", "--val_examples=0",
                 f"--data_dir={SHARED_DATA}", f"--model_dir={run}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.load(open(os.path.join(run, "config.json")))["bnn_prior_sigma"] == 0.05

  def evaluate_run(**kw):
    cfg = Config(mode="eval", model_dir=run, eval_examples=64, attack_steps=2, bnn_ensemble=3,
                 **kw)
    return evaluate.run_eval(cfg, mnist_slice(), verbose=False)

  result = evaluate_run()
  assert result["stochastic"] and result["attack"]["eot_samples"] == BNN_EOT_SAMPLES == 20
  assert not result["warnings"] and result["table_row"].startswith("| Adv-BNN |")
  assert result["bnn"] == dict(ensemble=3, parameters=dict(mean=431080, total=862160))
  # Memory: means and log-sigmas (the paper's 200%); Flops: 3 forward passes per prediction.
  assert (result["memory_pct"], result["flops_ratio"], result["sparsity"]) == (200.0, 1 / 3, 0.0)
  single = evaluate_run(eot_samples=1)
  assert single["attack"]["eot_samples"] == 1
  assert any("pgd ran on single-sample gradients" in w for w in single["warnings"])
  gradient_free = evaluate_run(eot_samples=1, attack="square", square_queries=10)
  assert not gradient_free["warnings"]

  export = str(tmp_path / "export")
  with pytest.raises(UserError, match="--mode=prune"):
    run_export(Config(mode="prune", model_dir=run, export_dir=export))
  path = run_export(Config(mode="export", model_dir=run, export_dir=export,
                           bnn_ensemble=4))["path"]
  serve = load_saved_model(path).signatures["serving_default"]
  x = tf.constant(mnist_slice()[2][:8], tf.float32) / 255.0
  a, b = serve(images=x)["probabilities"].numpy(), serve(images=x)["probabilities"].numpy()
  np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-5)
  assert not np.allclose(a, b)  # the stochastic net, not its mean
  assert json.load(open(os.path.join(path, "config.json")))["bnn_ensemble"] == 4

  report = run_report(Config(mode="report", runs=run, report_dir=str(tmp_path / "report")))
  assert "| Adv-BNN |" in report["table"]
  assert "mean softmax of 3 weight samples" in open(report["report"]).read()


@pytest.mark.slow
def test_bayesian_vgg_samples_every_conv_and_dense_layer_and_trains():
  from anp.training.model import AdversarialTrainer, adam
  from anp.training.objectives import SampledCE
  from models.vgg import VGG
  keras.utils.set_random_seed(0)
  net = VGG(10, masked=False, bayes=(0.05, 0.05), config=((8, 0.3), (8, "M")))
  x = tf.random.uniform([2, 32, 32, 3])
  net(x)
  assert len(net.bayes_layers) == 4 and float(net.kl()) > 0
  seed = tf.constant([5, 6], tf.int64)
  for training in (True, False):
    np.testing.assert_array_equal(net(x, training=training, seed=seed).numpy(),
                                  net(x, training=training, seed=seed).numpy())
  assert not np.allclose(net(x).numpy(), net(x).numpy())
  trainer = AdversarialTrainer(net, n_train=100, eps=0.03, step_size=0.01,
                               attack_steps=1, beta=1.0, weight_decay=0.0, seed=0,
                               objective=SampledCE())
  trainer.compile(optimizer=adam(1e-3))
  kl = float(net.kl())
  out = trainer.train_step((x, tf.constant([1, 2])))
  assert float(out["loss"]) == pytest.approx(float(out["ce_adv"]) + kl / 100, rel=1e-5)
