"""The ANP-VS trainer and main.py, end to end on real MNIST slices."""

import json
import os
import shlex
import subprocess
import sys
import unittest

import keras
import pytest
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from anp.config import Config
from anp.runs.rundir import build_net
from anp.training.train import make_trainer
from tests.helpers import REPO, SHARED_DATA, have_real_data, mnist_slice

needs_data = unittest.skipUnless(have_real_data(), f"real MNIST not found in {SHARED_DATA}")


@needs_data
class TrainStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("standard", "at", "trades", "bp", "anp", "anp_vs", "at_bnn")
  def test_steps_lower_loss_and_update_the_right_variables(self, method):
    tf.random.set_seed(0)
    cfg = Config(dataset="mnist", method=method, train_attack_steps=5).resolved()
    net = build_net(cfg)
    trainer = make_trainer(net, cfg, n_train=60000, total_steps=1000)
    x_tr, y_tr, _, _ = mnist_slice()
    x = tf.constant(x_tr[:64], tf.float32) / 255.0
    y = tf.constant(y_tr[:64])
    weights0 = [v.numpy().copy() for v in net.weight_variables]
    masks0 = [v.numpy().copy() for v in net.mask_variables]
    step = tf.function(trainer.train_step)
    losses = [float(step((x, y))["loss"]) for _ in range(40)]
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertLess(np.mean(losses[-5:]), np.mean(losses[:5]) - 0.005, losses)
    for before, v in zip(weights0, net.weight_variables):
      self.assertNotAllClose(before, v.numpy(), msg=v.name)
    self.assertEqual(len(masks0) > 0, cfg.masked)
    for before, v in zip(masks0, net.mask_variables):
      self.assertNotAllClose(before, v.numpy(), msg=v.name)

  def test_at_adds_the_originals_vulnerability_term(self):
    # The original's AT ('base' mode with adversarial training) adds 1e-4 * V to its loss.
    x = tf.random.uniform([16, 28, 28, 1])
    y = tf.range(16) % 10
    out = {}
    for lam in (None, 0.0):
      cfg = Config(dataset="mnist", method="at", train_attack_steps=3, lambda_vs=lam).resolved()
      keras.utils.set_random_seed(0)
      trainer = make_trainer(build_net(cfg), cfg, n_train=60000, total_steps=100)
      out[lam] = {k: float(v) for k, v in tf.function(trainer.train_step)((x, y)).items()}
    self.assertEqual(Config(method="at").resolved().lambda_vs, 1e-4)
    self.assertGreater(out[None]["vulnerability"], 0.0)
    self.assertAllClose(out[None]["vulnerability"], out[0.0]["vulnerability"])
    self.assertAllClose(out[None]["loss"] - out[0.0]["loss"], 1e-4 * out[None]["vulnerability"],
                        atol=1e-6, rtol=1e-3)

  def test_vulnerability_term_reaches_every_latent_layer(self):
    cfg = Config(dataset="mnist", method="anp_vs", train_attack_steps=2).resolved()
    net = build_net(cfg)
    x = tf.random.uniform([8, 28, 28, 1])
    from anp.training import losses
    with tf.GradientTape() as tape:
      _, fc = net(x, training=True, return_features=True)
      _, fa = net(x + 0.1, training=True, return_features=True)
      v = losses.vulnerability(fc, fa)
    grads = tape.gradient(v, [net.conv1.kernel, net.conv2.kernel, net.dense3.kernel])
    for g in grads:
      self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)

  def test_bfloat16_training_attack_is_float32_outside_and_as_strong(self):
    x = tf.random.stateless_uniform([16, 28, 28, 1], [3, 4])
    y = tf.range(16) % 10
    cfg = Config(dataset="mnist", method="anp_vs", train_attack_steps=10,
                 train_attack_dtype="bfloat16").resolved()
    trainer = make_trainer(build_net(cfg), cfg, n_train=1000, total_steps=10)
    self.assertEqual(trainer.attack_dtype, tf.bfloat16)

    def ce(t):
      return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          y, trainer.net(t, training=False))))

    a32, a16 = (trainer.make_adversarial(x, y, tf.constant([1, 2]), dtype=d)
                for d in (tf.float32, tf.bfloat16))
    self.assertEqual(a16.dtype, tf.float32)
    self.assertLessEqual(float(tf.reduce_max(tf.abs(a16 - x))), cfg.eps + 1e-6)
    self.assertGreater(float(tf.reduce_mean(tf.cast(a16 != a32, tf.float32))), 0)  # in bf16
    gain32, gain16 = ce(a32) - ce(x), ce(a16) - ce(x)
    self.assertGreater(gain32, 0)
    self.assertGreater(gain16, 0.8 * gain32)
    self.assertTrue(np.isfinite(float(trainer.train_step((x, y))["loss"])))


def run_main(*args, timeout=600):
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO)


class CommandLineTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (["--dataset=imagenet"], "dataset"),
      (["--method=magic"], "method"),
      (["--eps=-0.1"], "eps"),
      (["--mode=fly"], "mode"),
      (["--dataset=cifar10", "--train_attack_dtype=bfloat16"], "train_attack_dtype"),
  )
  def test_bad_flags_exit_nonzero_with_clear_message(self, args, flag):
    out = run_main(*args, "--epochs=1", timeout=120)
    self.assertEqual(out.returncode, 2, out.stderr)  # flag parsing and validation alike
    self.assertIn(f"--{flag}", out.stderr)
    self.assertNotIn("Traceback", out.stderr)

  def test_help_exits_zero_with_an_example_per_mode(self):
    out = run_main("--help", timeout=120)
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    for mode in ("quickstart", "train", "eval", "prune", "export", "report"):
      self.assertIn(f"python main.py --mode={mode}", out.stdout)
    self.assertIn("--checkpoint_every", out.stdout)

  def test_cifar_validates_on_fewer_examples_by_default(self):
    self.assertEqual(Config(dataset="mnist").resolved().val_examples, 1000)
    self.assertEqual(Config(dataset="cifar10").resolved().val_examples, 200)
    self.assertEqual(Config(dataset="cifar10", val_examples=0).resolved().val_examples, 0)

  def test_defaults_are_the_original_readme_commands(self):
    # (eps, step_size, train PGD steps, beta, lambda) of the original README's ANP-VS commands.
    want = {"mnist": (0.3, 0.01, 20, 4.0, 1e-3), "cifar10": (0.03, 0.007, 10, 2.0, 1e-4),
            "cifar100": (0.03, 0.007, 10, 1.0, 0.1)}
    for dataset, values in want.items():
      cfg = Config(dataset=dataset).resolved()
      self.assertEqual((cfg.eps, cfg.step_size, cfg.train_attack_steps, cfg.beta,
                        cfg.lambda_vs), values, dataset)
    self.assertEqual(Config().bias_init, "glorot")

  def test_missing_data_dir_is_a_clear_error(self):
    missing = os.path.join(self.get_temp_dir(), "no_such_dir")
    out = run_main("--mode=train", f"--data_dir={missing}",
                   f"--model_dir={self.get_temp_dir()}/run", timeout=120)
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertIn("--data_dir", out.stderr)
    self.assertIn(missing, out.stderr)
    self.assertNotIn("Traceback", out.stderr)

  def test_eval_of_a_dir_without_a_run_is_a_clear_error(self):
    out = run_main("--mode=eval", f"--model_dir={self.get_temp_dir()}", timeout=120)
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertIn("--model_dir", out.stderr)
    self.assertNotIn("Traceback", out.stderr)

  @needs_data
  @pytest.mark.slow
  def test_train_then_eval_end_to_end_and_resume(self):
    run = os.path.join(self.get_temp_dir(), "anp_vs")
    common = ["--dataset=mnist", f"--data_dir={SHARED_DATA}", f"--model_dir={run}"]
    out = run_main("--mode=train", "--method=anp_vs", "--epochs=1", "--steps_per_epoch=15",
                   "--train_attack_steps=5", "--val_examples=128", *common)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    self.assertEqual([r["epoch"] for r in log], [1])
    self.assertTrue(os.path.isdir(os.path.join(run, "logs")))  # TensorBoard scalars

    # Running again with more epochs resumes at epoch 2 with the saved step counter.
    out = run_main("--mode=train", "--method=anp_vs", "--epochs=2", "--steps_per_epoch=15",
                   "--train_attack_steps=5", "--val_examples=128", *common)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("Resuming", out.stdout + out.stderr)
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    self.assertEqual([r["epoch"] for r in log], [1, 2])
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run))
    self.assertEqual(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"), 30)
    self.assertEqual(reader.get_tensor("mask_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"), 30)
    self.assertEqual(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"), 2)

    out = run_main("--mode=eval", "--eval_examples=200", "--attack_steps=10", *common)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    result = json.load(open(os.path.join(run, "eval.json")))
    for key in ("clean_acc", "adv_acc", "vulnerability", "sparsity", "n_active"):
      self.assertIn(key, result)
    self.assertEqual(result["examples"], 200)
    self.assertBetween(result["clean_acc"], 0.0, 1.0)
    self.assertLessEqual(result["adv_acc"], result["clean_acc"])
    self.assertLen(result["n_active"], 4)
    self.assertEqual(result["attack"]["steps"], 10)
    self.assertEqual(result["command"], shlex.join(
        ["python", "main.py", "--mode=eval", "--eval_examples=200", "--attack_steps=10", *common]))


class TradesDefaultsTest(tf.test.TestCase):
  """TRADES on MNIST: the authors' train_trades_mnist.py (40 steps of 0.01, beta 1)."""

  def test_trades_mnist_defaults_are_the_authors_and_flags_give_the_old_ones(self):
    for dataset, want in (("mnist", (40, 1.0)), ("fashion_mnist", (40, 1.0)),
                          ("cifar10", (10, 6.0))):
      for method in ("trades", "hydra"):  # HYDRA's default objective is TRADES
        cfg = Config(dataset=dataset, method=method).resolved()
        self.assertEqual((cfg.train_attack_steps, cfg.trades_beta), want, (dataset, method))
    cfg = Config(dataset="mnist", method="at").resolved()  # other methods: ANP-VS's PGD-20
    self.assertEqual(cfg.train_attack_steps, 20)
    old = Config(dataset="mnist", method="trades", train_attack_steps=20,
                 trades_beta=6.0).resolved()
    self.assertEqual((old.train_attack_steps, old.trades_beta), (20, 6.0))

  def test_trades_mnist_training_attack_reaches_eps(self):
    # From x + 0.001 N(0, 1), 20 steps of 0.01 end within ~0.2 of x; 40 reach eps = 0.3.
    cfg = Config(dataset="mnist", method="trades").resolved()
    keras.utils.set_random_seed(0)
    trainer = make_trainer(build_net(cfg), cfg, n_train=60000, total_steps=10)
    self.assertEqual(trainer.attack_args["steps"], 40)
    self.assertEqual(trainer.objective.beta, 1.0)
    x = tf.random.stateless_uniform([8, 28, 28, 1], [3, 4])
    x_adv = trainer.make_adversarial(x, None, [1, 2], trainer.objective.craft)
    distance = float(tf.reduce_max(tf.abs(x_adv - x)))
    self.assertGreater(distance, 0.25)
    self.assertLessEqual(distance, 0.3 + 1e-6)


if __name__ == "__main__":
  tf.test.main()


def test_init_from_a_checkpoint_without_the_networks_weights_is_an_error(tmp_path):
  """A checkpoint sharing no weights with the network used to load nothing and train on from
  random weights; now it is a one-line error naming the flag."""
  from anp.runs.rundir import RunError, build_net, restore_net
  unrelated = tf.train.Checkpoint(other=tf.Variable(tf.zeros([3])))
  prefix = unrelated.write(str(tmp_path / "unrelated" / "ckpt"))
  net = build_net(Config(method="anp_vs").resolved())
  with pytest.raises(RunError, match=r"--init_from: .* holds no values for 8 of the network's "
                                     r"8 weights"):
    restore_net(net, prefix)
  # Kernels alone are not enough: the biases must come from the checkpoint too.
  plain = build_net(Config(method="standard").resolved())
  kernels = tf.train.Checkpoint(net=tf.train.Checkpoint(**{
      name: tf.train.Checkpoint(_kernel=getattr(plain, name).kernel)
      for name in ("conv1", "conv2", "dense3", "dense4")}))
  partial = kernels.write(str(tmp_path / "kernels" / "ckpt"))
  with pytest.raises(RunError, match=r"holds no values for 4 of the network's 8 weights \(e.g. "
                                     r"\S*bias\)"):
    restore_net(net, partial)
  # A standard model's checkpoint initialises the masked net: its kernels, not its masks.
  standard = build_net(Config(method="standard").resolved())
  good = tf.train.Checkpoint(net=standard).write(str(tmp_path / "standard" / "ckpt"))
  assert restore_net(net, good) == good
  np.testing.assert_array_equal(net.variables[0].numpy(), standard.variables[0].numpy())


@needs_data
@pytest.mark.slow
def test_resume_drops_a_torn_last_log_line_and_refuses_a_damaged_log(tmp_path):
  """A kill while appending an epoch's record leaves half a line; the resumed run redoes that
  epoch and rewrites the log whole. A line that is not JSON before the last is damage."""
  from anp.runs.rundir import RunError
  from anp.training.train import run_train
  run = str(tmp_path / "run")
  cfg = dict(method="standard", epochs=1, steps_per_epoch=2, batch_size=16, val_examples=0,
             model_dir=run)
  arrays = mnist_slice(256, 64)
  run_train(Config(**cfg), arrays)
  log = os.path.join(run, "train_log.jsonl")
  with open(log, "a") as f:
    f.write('{"epoch": 2, "st')
  records = run_train(Config(**dict(cfg, epochs=2)), arrays)
  assert [r["epoch"] for r in records] == [1, 2]
  with open(log) as f:
    assert [json.loads(line)["epoch"] for line in f] == [1, 2]
  with open(log) as f:
    lines = f.readlines()
  with open(log, "w") as f:
    f.writelines([lines[0][:10] + "\n", lines[1]])
  with pytest.raises(RunError, match="line 1 is not JSON"):
    run_train(Config(**dict(cfg, epochs=3)), arrays)
