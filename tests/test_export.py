"""Compact pruned models and SavedModels for TF Serving."""

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from anp.config import Config, run_config_path
from anp.deploy.card import CARD, write_model_card
from anp.deploy.compact import compact_model
from anp.deploy.efficiency import count_params
from anp.deploy.export import save_for_serving
from models.lenet import LeNet5
from models.vgg import VGG
from tests.helpers import REPO, SHARED_DATA, have_real_data, mnist_slice


def _prune_randomly(net, rng, fraction=0.3):
  for mask in net.masks:
    a_uc = rng.uniform(-1.0, 2.0, mask.units).astype(np.float32)
    a_uc[rng.random(mask.units) < fraction] = -10.0  # E[pi] ~ 1e-4: pruned
    mask.a_uc.assign(a_uc)


def _lenet(rng, masked=True):
  net = LeNet5(masked=masked)
  net(tf.zeros([1, 28, 28, 1]))
  if masked:
    _prune_randomly(net, rng)
  return net


def _vgg(rng, standardize):
  net = VGG(standardize=standardize)
  net(tf.zeros([1, 32, 32, 3]))
  for bn in [b["bn"] for b in net.blocks] + [net.bn_fc1]:
    n = bn.gamma.shape[0]
    bn.gamma.assign(rng.uniform(0.5, 1.5, n))
    bn.beta.assign(rng.normal(0.3, 0.5, n))  # pruned channels leave non-zero constants
    bn.moving_mean.assign(rng.normal(0, 0.5, n))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, n))
  _prune_randomly(net, rng)
  return net


def _images(n=64):
  if have_real_data():
    return tf.constant(mnist_slice()[2][:n], tf.float32) / 255.0
  return tf.random.uniform([n, 28, 28, 1])


class CompactModelTest(tf.test.TestCase, parameterized.TestCase):

  def test_lenet_compact_matches_masked_logits_and_counts(self):
    net = _lenet(np.random.default_rng(0))
    compact = compact_model(net)
    x = _images()
    self.assertAllClose(net(x, training=False), compact(x), atol=1e-4, rtol=0)
    self.assertEmpty([l for l in compact.layers if "bbd" in l.name])
    n1, n2, _, n4 = net.n_active()
    keep2 = net.bbd2.keep().numpy()
    keep3 = net.bbd3.keep().numpy().reshape(16, 50)
    n3 = int(np.sum(keep3[:, keep2]))  # flattened features of kept channels kept by bbd3
    expected = (25 * n1 + n1) + (25 * n1 * n2 + n2) + (n3 * n4 + n4) + (n4 * 10 + 10)
    self.assertEqual(count_params(compact.weights), expected)
    self.assertLess(expected, 431080)

  def test_unmasked_lenet_is_unchanged(self):
    net = _lenet(np.random.default_rng(1), masked=False)
    compact = compact_model(net)
    x = _images(16)
    self.assertAllClose(net(x), compact(x), atol=1e-5, rtol=0)
    self.assertEqual(count_params(compact.weights), 431080)

  @parameterized.parameters(True, False)
  def test_vgg_compact_matches_masked_logits(self, standardize):
    rng = np.random.default_rng(2)
    net = _vgg(rng, standardize)
    self.assertLess(net.n_active()[12], 512)  # a pruned channel in the last conv block
    compact = compact_model(net)
    x = tf.random.uniform([8, 32, 32, 3])
    ref = net(x, training=False)
    self.assertAllClose(ref, compact(x), atol=1e-4, rtol=0)
    self.assertGreater(float(tf.math.reduce_std(ref)), 1e-3)  # not a trivial output
    self.assertLess(count_params(compact.weights), count_params(net.weights))

  def test_training_net_is_not_modified(self):
    net = _lenet(np.random.default_rng(3))
    before = [v.numpy().copy() for v in net.weights]
    compact_model(net)
    for b, v in zip(before, net.weights):
      self.assertAllEqual(b, v.numpy())


SERVE_SCRIPT = r"""
import json, sys
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
body = json.loads(open(sys.argv[2]).read())
out = fn(images=tf.constant(np.asarray(body["instances"], np.float32)))
print(json.dumps({"classes": out["classes"].numpy().tolist(),
                  "probabilities": out["probabilities"].numpy().tolist(),
                  "n_params": int(sum(np.prod(s) for n, s in tf.train.list_variables(
                      sys.argv[1] + "/variables/variables") if "OBJECT_GRAPH" not in n))}))
"""


class SavedModelTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.net = _lenet(np.random.default_rng(4))
    cls.compact = compact_model(cls.net)
    cls.export_dir = os.path.join(tf.compat.v1.test.get_temp_dir(), "export")
    cls.path = save_for_serving(cls.compact, cls.export_dir, (28, 28, 1))

  def test_version_directory(self):
    self.assertEqual(os.path.basename(self.path), "1")
    self.assertTrue(os.path.isfile(os.path.join(self.path, "saved_model.pb")))

  def test_fresh_process_rest_body_gives_keras_classes(self):
    x = _images(8)
    body = os.path.join(self.get_temp_dir(), "request.json")
    with open(body, "w") as f:
      json.dump({"instances": x.numpy().tolist()}, f)  # TF Serving's REST row format
    out = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, self.path, body],
                         capture_output=True, text=True, timeout=300, env={**os.environ,
                                                                           "TF_CPP_MIN_LOG_LEVEL": "3"})
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    keras_classes = np.argmax(self.net(x, training=False).numpy(), -1)
    self.assertEqual(result["classes"], keras_classes.tolist())
    self.assertAllClose(np.sum(result["probabilities"], -1), np.ones(8), atol=1e-5)
    self.assertEqual(result["n_params"], count_params(self.compact.weights))

  def test_saved_model_cli_lists_the_signature(self):
    cmd = ([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"], )[0]
    out = subprocess.run(cmd + ["show", "--dir", self.path, "--tag_set", "serve",
                                "--signature_def", "serving_default"],
                         capture_output=True, text=True, timeout=300)
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    for name in ("images", "probabilities", "classes"):
      self.assertIn(f"['{name}']", out.stdout)
    self.assertIn("(-1, 28, 28, 1)", out.stdout)

  def test_wrong_shape_or_dtype_is_rejected(self):
    fn = tf.saved_model.load(self.path).signatures["serving_default"]
    with self.assertRaisesRegex((ValueError, TypeError, tf.errors.InvalidArgumentError),
                                r"images must have shape \[batch, 28, 28, 1\]"):
      fn(images=tf.zeros([2, 32, 32, 3]))
    with self.assertRaisesRegex((ValueError, TypeError, tf.errors.InvalidArgumentError),
                                r"images must have shape"):
      fn(images=tf.zeros([2, 32, 32, 1]))
    with self.assertRaisesRegex((ValueError, TypeError, tf.errors.InvalidArgumentError),
                                "float tensor but is a int32"):
      fn(images=tf.zeros([2, 28, 28, 1], tf.int32))


@unittest.skipUnless(have_real_data(), f"real MNIST not found in {SHARED_DATA}")
class PruneCommandTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_prune_then_eval_the_export(self):
    run = os.path.join(self.get_temp_dir(), "run")
    os.makedirs(run)
    net = _lenet(np.random.default_rng(5))
    tf.train.Checkpoint(net=net).save(os.path.join(run, "ckpt"))
    Config(dataset="mnist", method="anp_vs", model_dir=run).save(run_config_path(run))
    out_dir = os.path.join(self.get_temp_dir(), "serving")
    main = os.path.join(REPO, "main.py")
    common = [f"--data_dir={SHARED_DATA}", "--eval_examples=200"]
    out = subprocess.run([sys.executable, main, "--mode=prune", f"--model_dir={run}",
                          f"--export_dir={out_dir}", *common],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    report = json.load(open(os.path.join(out_dir, "pruning.json")))
    self.assertEqual(report["n_active"], net.n_active())
    self.assertLessEqual(report["max_abs_logit_diff"], 1e-4)
    self.assertLess(report["params"]["compact"], report["params"]["dense"])
    self.assertGreater(report["flops"]["ratio"], 1.0)
    for key in ("memory_pct", "flops_ratio", "sparsity_pct"):
      self.assertIn(key, report["paper"])

    evals = []
    for model_dir in (run, os.path.join(out_dir, "1")):
      out = subprocess.run([sys.executable, main, "--mode=eval", f"--model_dir={model_dir}",
                            "--attack_steps=5", *common],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
      self.assertEqual(out.returncode, 0, out.stderr[-3000:])
      evals.append(json.load(open(os.path.join(model_dir, "eval.json"))))
    self.assertAlmostEqual(evals[0]["clean_acc"], evals[1]["clean_acc"], places=6)
    # Same seed, same random start: PGD agrees up to near-ties of the 1e-6 logit differences.
    self.assertAlmostEqual(evals[0]["adv_acc"], evals[1]["adv_acc"], delta=0.011)
    for key in ("n_active", "sparsity", "memory_pct", "flops_ratio"):
      self.assertEqual(evals[1][key], evals[0][key], key)  # from the export's pruning.json
    for folder in (out_dir, os.path.join(out_dir, "1")):
      card = open(os.path.join(folder, CARD)).read()
      self.assertIn("PGD-", card)
      self.assertIn("[batch, 28, 28, 1]", card)
    saved = json.load(open(os.path.join(out_dir, "1", "config.json")))
    self.assertNotIn("data_dir", saved)
    self.assertEqual(saved["units_kept"], net.n_active())


COMMITTED_RUN = os.path.join(REPO, "results", "mnist", "anp_vs")
COMMITTED_EXPORT = os.path.join(REPO, "results", "mnist", "anp_vs_export")


@unittest.skipUnless(os.path.isfile(os.path.join(COMMITTED_RUN, "eval.json")),
                     "the committed ANP-VS run is absent")
class ModelCardTest(tf.test.TestCase):
  """`write_model_card` on a copy of the committed export (its SavedModel is not read)."""

  def setUp(self):
    super().setUp()
    self.export = os.path.join(self.get_temp_dir(), "export")
    shutil.copytree(COMMITTED_EXPORT, self.export, dirs_exist_ok=True)
    for folder in (self.export, os.path.join(self.export, "1")):  # the card is written anew
      if os.path.exists(os.path.join(folder, CARD)):
        os.remove(os.path.join(folder, CARD))
    self.card = write_model_card(self.export, COMMITTED_RUN)

  def test_card_names_the_attacks_and_threat_model(self):
    for folder in (self.export, os.path.join(self.export, "1")):
      self.assertEqual(open(os.path.join(folder, CARD)).read(), self.card)
    for text in ("L-inf", "eps = 0.3", "PGD-40 (1 restart, step 0.01)", "AutoAttack without FAB-T (APGD-CE",
                 "Black box", "without FAB-T", "seed 0", "input `images`, float32 "
                 "[batch, 28, 28, 1]", "`classes` int64", "--method=anp_vs",
                 "--init_from=results/mnist/standard", "Units kept per layer: 6/20, 20/50",
                 # the run it was trained from, --init_from followed back
                 "--method=standard --data_dir=DATA --model_dir=results/mnist/standard\n"):
      self.assertIn(text, self.card)
    self.assertNotIn("data_dir=../", self.card)

  def test_config_keeps_only_what_applies_to_the_model(self):
    saved = json.load(open(os.path.join(self.export, "1", "config.json")))
    self.assertNotIn("data_dir", saved)
    self.assertFalse([k for k in saved if k.startswith(("hydra", "admm", "awt", "bnn", "sap"))])
    self.assertNotIn("trades_beta", saved)  # anp_vs's loss has no TRADES term
    self.assertEqual((saved["method"], saved["eps"], saved["architecture"]),
                     ("anp_vs", 0.3, "lenet"))
    self.assertEqual(saved["units_kept"], [6, 20, 147, 39])
    # --mode=eval reads it back as the run's identity.
    run = Config.load(run_config_path(COMMITTED_RUN)).resolved()
    back = Config.load(os.path.join(self.export, "1", "config.json")).resolved()
    self.assertEqual({k: getattr(back, k) for k in run.run_keys},
                     {k: getattr(run, k) for k in run.run_keys})
    # Idempotent: a second card over the new config is the same.
    self.assertEqual(write_model_card(self.export, COMMITTED_RUN), self.card)

  def test_the_card_is_titled_with_the_row_name(self):
    """The tables' name of the row, not the method's: ADMM's retraining is a HYDRA run."""
    self.assertTrue(self.card.startswith("# ANP-VS LeNet5-Caffe on MNIST\n"))
    admm_run = os.path.join(REPO, "results", "mnist", "admm")
    if not os.path.isfile(os.path.join(admm_run, "config.json")):
      self.skipTest("the committed ADMM run is absent")
    export = os.path.join(self.get_temp_dir(), "admm_export")
    os.makedirs(os.path.join(export, "1"))
    card = write_model_card(export, admm_run)
    self.assertTrue(card.startswith("# ADMM 80% LeNet5-Caffe on MNIST\n"), card[:60])
    self.assertIn("--hydra_objective=adv --prune_ratio=0.8 --epochs=40", card)
    self.assertNotIn("--trades_beta", card)  # implied by the objective

  def test_an_export_of_an_earlier_checkpoint_shows_only_its_own_evaluations(self):
    card = write_model_card(self.export, COMMITTED_RUN, checkpoint="the end of epoch 38")
    self.assertIn("at its checkpoint of the end of epoch 38, not its final one.", card)
    self.assertNotIn(os.path.join(COMMITTED_RUN, "eval"), card)  # the final checkpoint's
    self.assertNotIn("Trained 200 of 200 epochs", card)
    own = os.path.join(self.export, "1", "eval.json")
    self.assertEqual(card.count(f"`{own}`"), 1)
    self.assertIn(f"`{own}`", self.card)  # the export's evaluation, listed once
    self.assertEqual(self.card.count(f"`{own}`"), 1)


if __name__ == "__main__":
  tf.test.main()


@pytest.mark.skipif(not have_real_data(), reason="real MNIST not found")
@pytest.mark.parametrize("row", ["anp_vs", "anp"])
def test_committed_pruned_savedmodel_serves_its_run(row):
  """The committed compact SavedModel gives its run's masked network's predictions, and its
  card and pruning.json state the parameters it really has."""
  from anp.deploy.export import load_saved_model
  from anp.runs.rundir import load_run
  export = os.path.join(REPO, "results", "mnist", f"{row}_export")
  if not os.path.isdir(os.path.join(export, "1")):
    pytest.skip(f"no committed export of {row}")
  net, _ = load_run(os.path.join(REPO, "results", "mnist", row))
  x = tf.constant(mnist_slice(n_train=0, n_test=256)[2], tf.float32) / 255.0
  served = load_saved_model(os.path.join(export, "1")).signatures["serving_default"](images=x)
  np.testing.assert_allclose(served["logits"], net(x, training=False), atol=1e-4)
  kept = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
      os.path.join(export, "1", "variables", "variables")) if "OBJECT_GRAPH" not in name)
  card = open(os.path.join(export, CARD)).read()
  assert f"Parameters: {kept:,} served" in card, kept
  pruning = json.load(open(os.path.join(export, "pruning.json")))
  assert [layer["kept"] for layer in pruning["layers"]] == net.n_active()
