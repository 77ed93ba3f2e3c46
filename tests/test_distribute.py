"""tf.distribute (anp.training.distribute): one device vs two replicas, a two-process
multi-worker run on localhost, mixed precision, the flags' errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from anp.training import distribute
from anp.config import Config
from anp.errors import UserError
from anp.runs.rundir import build_net
from anp.training.train import make_trainer
from models import replica_rows
from tests.helpers import REPO, SHARED_DATA, have_real_data

needs_data = unittest.skipUnless(have_real_data(), f"real MNIST not found in {SHARED_DATA}")


def _environment(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


class TwoReplicasTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_two_replicas_give_the_one_device_step_and_evaluation(self):
    # tests/distribute_check.py sets up two logical CPU devices, which must happen before TF
    # initialises its devices: hence a fresh process.
    out = subprocess.run([sys.executable, os.path.join(REPO, "tests", "distribute_check.py"),
                          "--methods=anp_vs,at", "--steps=2", "--batch=16"],
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         env=_environment())
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    self.assertEqual(result["replicas"], 2)
    self.assertEqual(sorted(result["train"]), ["anp_vs/adam", "anp_vs/sgd", "at/adam", "at/sgd"])
    for key, r in result["train"].items():
      method, optimizer = key.split("/")
      self.assertGreater(r["weights_moved"], 1e-4, key)
      if optimizer == "sgd":
        # Updates are lr * gradient: equal weights are equal all-reduced gradients (a loss or
        # KL / N counted once per replica, or not divided by the replicas, would double them).
        self.assertLess(r["max_abs_diff"]["weights"], 1e-6, key)
        self.assertLess(r["max_abs_diff"]["masks"], 1e-6, key)
      else:
        # Adam's moments are linear / quadratic in the gradients; its weights move by ~lr *
        # sign(gradient), so a gradient within rounding of zero may go +-lr (1e-3) either way.
        self.assertLess(r["max_abs_diff"]["optimizer"], 1e-6, key)
        self.assertLess(r["max_abs_diff"].get("mask_optimizer", 0.0), 1e-6, key)
        self.assertLessEqual(r["max_abs_diff"]["weights"], 2 * 2e-3, key)
      self.assertEqual(method == "anp_vs", "mask_optimizer" in r["max_abs_diff"], key)
      for one, two in zip(r["logs"]["one"], r["logs"]["two"]):
        self.assertEqual(sorted(one), sorted(two))
        for k in one:
          self.assertAllClose(one[k], two[k], rtol=1e-5, atol=1e-6, msg=f"{method} {k}")
      val = r["validation"]  # 11 examples: replicas of 6 and 5
      for k in val["one"]:
        self.assertAllClose(val["one"][k], val["two"][k], rtol=1e-5,
                            atol=1e-7, msg=f"{method} val {k}")
    one, two = result["eval"]["one"], result["eval"]["two"]
    self.assertEqual(one["examples"], 45)
    for k in ("examples", "clean_acc", "adv_acc", "max_linf"):
      self.assertEqual(one[k], two[k], k)
    self.assertAllClose(one["layer_vulnerability"], two["layer_vulnerability"], rtol=1e-5)


class ReplicaRowsTest(tf.test.TestCase):

  def test_split_rows_cover_the_batch_in_order(self):
    for total in (1, 7, 16, 25):
      for n in (1, 2, 3):
        rows = distribute.split_rows(total, n)
        self.assertLen(rows, n)
        self.assertEqual([o for o, _ in rows], np.cumsum([0] + [s for _, s in rows])[:-1]
                         .tolist())
        self.assertEqual(sum(s for _, s in rows), total)
        self.assertLessEqual(max(s for _, s in rows) - min(s for _, s in rows), 1)

  def test_replica_draws_are_rows_of_the_global_draw(self):
    seed = tf.constant([1, 2], tf.int64)
    draw = lambda s: tf.random.stateless_uniform(s, seed)  # noqa: E731
    whole = draw([7, 3])
    parts = []
    for offset, size in distribute.split_rows(7, 2):
      with replica_rows.global_batch(offset, 7):
        self.assertTrue(replica_rows.active())
        parts.append(replica_rows.per_example_draw(draw, [size, 3]))
    self.assertFalse(replica_rows.active())
    self.assertAllEqual(tf.concat(parts, 0), whole)
    self.assertAllEqual(replica_rows.per_example_draw(draw, [7, 3]), whole)


class FlagsTest(tf.test.TestCase):

  def test_bad_values_are_one_line_errors(self):
    with self.assertRaisesRegex(UserError, r"--strategy: expected one of .*Received: 'gpu'"):
      Config(strategy="gpu").resolved()
    with self.assertRaisesRegex(UserError, r"--jit_compile: expected --strategy=default"):
      Config(strategy="mirrored", jit_compile=True).resolved()
    with self.assertRaisesRegex(UserError, r"TF_CONFIG"):
      old = os.environ.pop("TF_CONFIG", None)
      try:
        distribute.make_strategy("multi_worker")
      finally:
        if old is not None:
          os.environ["TF_CONFIG"] = old

  def test_training_batch_must_split_evenly(self):
    class TwoReplicas:
      num_replicas_in_sync = 2
    distribute.check_batch_size(TwoReplicas(), 64)
    distribute.check_batch_size(None, 63)
    with self.assertRaisesRegex(UserError, r"--batch_size: expected a multiple of the 2 "
                                r"replicas.*Received: 63"):
      distribute.check_batch_size(TwoReplicas(), 63)

  def test_tpu_without_a_tpu_exits_2_with_one_line(self):
    out = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=train",
                          "--strategy=tpu", f"--model_dir={self.get_temp_dir()}/run"],
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=_environment())
    self.assertEqual(out.returncode, 2, out.stderr[-2000:])
    self.assertIn("--strategy=tpu: expected a TPU", out.stderr)
    self.assertNotIn("Traceback", out.stderr)
    self.assertFalse(os.path.exists(f"{self.get_temp_dir()}/run"))


class MixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("mixed_bfloat16", "mixed_float16")
  def test_masks_stay_float32_and_finite(self, policy):
    # --mixed_precision picks mixed_bfloat16 here (no GPU); float16 also runs on a CPU.
    self.assertEqual(distribute.mixed_policy(), "mixed_bfloat16")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
      cfg = Config(dataset="mnist", method="anp_vs", train_attack_steps=2,
                   mixed_precision=True).resolved()
      keras.utils.set_random_seed(0)
      net = build_net(cfg)
      trainer = make_trainer(net, cfg, n_train=60000, total_steps=100)
      self.assertEqual(net.conv1.compute_dtype, policy[len("mixed_"):])
      scaled = policy == "mixed_float16"  # loss scaling for both optimizers
      for opt in (trainer.optimizer, trainer.mask_optimizer):
        self.assertEqual(isinstance(opt, keras.optimizers.LossScaleOptimizer), scaled)
      weights0 = [v.numpy().copy() for v in net.weight_variables]
      x = tf.random.uniform([8, 28, 28, 1])
      y = tf.range(8) % 10
      logs = tf.function(trainer.train_step)((x, y))
      for mask in net.masks:
        self.assertEqual(mask.compute_dtype, "float32")
        for v in mask.trainable_variables:
          self.assertEqual(v.dtype, "float32")
          self.assertTrue(np.all(np.isfinite(v.numpy())), v.name)
        for t in (mask.expected_pi(), mask.kl(), mask.sample_mask(8)):
          self.assertEqual(t.dtype, tf.float32)
          self.assertTrue(np.all(np.isfinite(t.numpy())))
      _, feats = net(x, training=True, return_features=True)
      self.assertEqual(feats[0].dtype, tf.float32)  # conv1 -> mask (float32) -> ReLU
      for k, v in logs.items():
        self.assertEqual(v.dtype, tf.float32, k)
        self.assertTrue(np.isfinite(float(v)), k)
      for v, before in zip(net.weight_variables, weights0):
        self.assertEqual(v.dtype, "float32")
        self.assertTrue(np.all(np.isfinite(v.numpy())), v.name)
        self.assertNotAllClose(before, v.numpy(), msg=v.name)  # the step was applied
    finally:
      keras.mixed_precision.set_global_policy(previous)


class SettingsTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_a_run_gives_back_the_policy_and_op_determinism_it_found(self):
    # --mixed_precision and --deterministic_ops hold for one run: a later run in the same
    # process (tests, run_train / run_eval called from Python) starts from the caller's state.
    from anp.evaluation.evaluate import run_eval
    from anp.training.train import run_train
    # TF exports enable_op_determinism only; its twins live in the same module.
    from tensorflow.python.framework import config as tf_config
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, [32, 28, 28, 1]).astype(np.uint8)
    labels = rng.integers(0, 10, [32]).astype(np.int32)
    arrays = (images, labels, images, labels)

    def state():
      return keras.mixed_precision.global_policy().name, tf_config.is_op_determinism_enabled()

    before = state()
    self.assertEqual(before, ("float32", False))
    common = dict(dataset="mnist", model_dir=os.path.join(self.get_temp_dir(), "run"),
                  mixed_precision=True, deterministic_ops=True)
    try:
      run_train(Config(mode="train", method="standard", epochs=1, steps_per_epoch=1,
                       batch_size=16, val_examples=0, **common), arrays)
      self.assertEqual(state(), before)
      run_eval(Config(mode="eval", eval_examples=8, attack_steps=1, **common), arrays,
               verbose=False)
      self.assertEqual(state(), before)
      with distribute.settings(Config(**common)):
        self.assertEqual(state(), (distribute.mixed_policy(), True))
      self.assertEqual(state(), before)
    finally:
      keras.mixed_precision.set_global_policy(before[0])
      tf_config.disable_op_determinism()


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


@needs_data
class MultiWorkerTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_two_workers_on_localhost_train_and_checkpoint_once(self):
    run = os.path.join(self.get_temp_dir(), "mw")
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    args = [sys.executable, os.path.join(REPO, "main.py"), "--mode=train",
            "--strategy=multi_worker", "--dataset=mnist", "--method=anp_vs",
            f"--data_dir={SHARED_DATA}", f"--model_dir={run}", "--epochs=1",
            "--steps_per_epoch=3", "--val_examples=0", "--train_attack_steps=2",
            "--batch_size=16"]
    procs = []
    for index in range(2):
      tf_config = json.dumps({"cluster": {"worker": workers},
                              "task": {"type": "worker", "index": index}})
      procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=REPO, env=_environment(TF_CONFIG=tf_config)))
    outputs = []
    try:
      for p in procs:
        outputs.append(p.communicate(timeout=150))
    finally:
      for p in procs:  # bounded: nothing outlives the test
        if p.poll() is None:
          p.kill()
          p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
      self.assertEqual(p.returncode, 0, stderr[-3000:])
    chief_out = outputs[0][0]
    self.assertIn("epoch 1/1:", chief_out)
    self.assertEqual(tf.train.latest_checkpoint(run), os.path.join(run, "ckpt-3"))
    self.assertEqual(sorted(f for f in os.listdir(run) if f.endswith(".index")),
                     ["ckpt-3.index"])  # one checkpoint, the chief's; no worker copies left
    self.assertFalse([f for f in os.listdir(run) if f.startswith(".worker")])
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    self.assertEqual([r["epoch"] for r in log], [1])
    self.assertTrue(np.isfinite(log[0]["loss"]))
    timing = [json.loads(line) for line in open(os.path.join(run, "timing.jsonl"))]
    self.assertEqual(timing[0]["replicas"], 2)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run))
    self.assertEqual(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"), 3)


if __name__ == "__main__":
  tf.test.main()


CPU_SPLIT_TRAIN = ["--mode=train", "--dataset=mnist", "--method=anp_vs", "--epochs=2",
                   "--steps_per_epoch=40", "--train_attack_steps=2", "--val_examples=64",
                   "--checkpoint_every=5", f"--data_dir={SHARED_DATA}"]


def _command(run, *extra):
  return [sys.executable, os.path.join(REPO, "main.py"), *CPU_SPLIT_TRAIN, f"--model_dir={run}",
          *extra]


def _train(run, *extra):
  out = subprocess.run(_command(run, *extra), capture_output=True, text=True, timeout=600,
                       cwd=REPO, env=_environment())
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _checkpoint(run):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def _log(run, name="train_log.jsonl"):
  with open(os.path.join(run, name)) as f:
    return [json.loads(line) for line in f]


@needs_data
class CpuSplitTest(tf.test.TestCase):
  """--strategy=cpu_split: the CPU as two single-threaded logical devices (a speed option)."""

  @pytest.mark.slow
  def test_kill_9_then_resume_equals_one_run_and_step_one_equals_one_device(self):
    tmp = self.get_temp_dir()
    whole, killed = os.path.join(tmp, "whole"), os.path.join(tmp, "killed")
    _train(whole, "--strategy=cpu_split")
    proc = subprocess.Popen(_command(killed, "--strategy=cpu_split"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_environment())
    marker, deadline = os.path.join(killed, "ckpt-45.index"), time.time() + 300
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    self.assertIsNone(proc.poll(), "the run ended before it could be killed mid-epoch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertIn("Resuming", _train(killed, "--strategy=cpu_split").stdout)
    a, b = _checkpoint(whole), _checkpoint(killed)
    self.assertEqual(sorted(a), sorted(b))
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The epoch's running means: equal up to rounding (each replica keeps its own metric
    # totals, and a restore hands each replica its share of the saved sum).
    for x, y in zip(_log(whole), _log(killed), strict=True):
      self.assertEqual(sorted(x), sorted(y))
      for key in ("epoch", "step", "n_active"):
        self.assertEqual(x[key], y[key])
      self.assertAllClose({k: v for k, v in x.items() if isinstance(v, float)},
                          {k: v for k, v in y.items() if isinstance(v, float)}, rtol=1e-6)
    self.assertEqual({r["replicas"] for r in _log(whole, "timing.jsonl")}, {2})
    # One step from the same weights: the loss is the one-device loss up to float rounding.
    one, split = os.path.join(tmp, "one"), os.path.join(tmp, "split")
    _train(one, "--epochs=1", "--steps_per_epoch=1")
    _train(split, "--epochs=1", "--steps_per_epoch=1", "--strategy=cpu_split")
    self.assertAllClose(_log(one)[0]["loss"], _log(split)[0]["loss"], rtol=1e-5)
    self.assertNotEqual(_log(one)[0]["loss"], _log(whole)[1]["loss"])  # training moved it

  def test_after_tensorflow_started_it_is_a_one_line_error(self):
    float(tf.constant(1.0) + 1.0)  # the runtime is up: its devices and thread pools are fixed
    with self.assertRaisesRegex(UserError, r"--strategy=cpu_split: expected to configure the "
                                r"CPU before TensorFlow starts"):
      distribute.make_strategy("cpu_split", 2)
    with self.assertRaisesRegex(UserError, r"--cpu_replicas: expected an integer >= 1"):
      Config(strategy="cpu_split", cpu_replicas=0).resolved()


@needs_data
@pytest.mark.slow
def test_cpu_split_step_equals_one_device_for_the_table_methods(tmp_path):
  """The methods results/mnist/run.sh trains with --strategy=cpu_split, and Adv-BNN: their
  first step's loss (attack, ADMM penalty, HYDRA top-k, Adv-BNN's weight sample) is the
  one-device loss up to float rounding. (AWT's search takes its NTK over each replica's
  half-batch: not split.)"""
  one_step = ["--epochs=1", "--steps_per_epoch=1", "--val_examples=0"]
  at = str(tmp_path / "at")
  _train(at, "--method=at", *one_step)
  for method in (["trades"], ["at_bnn"], ["admm", "--prune_ratio=0.8", f"--init_from={at}"],
                 ["hydra", "--hydra_stage=prune", "--prune_ratio=0.9315",
                  "--hydra_objective=at", f"--init_from={at}"],
                 ["hydra", "--hydra_stage=finetune", "--hydra_scores=magnitude",
                  "--hydra_objective=adv", "--prune_ratio=0.8", f"--init_from={at}"]):
    losses = []
    for strategy in ("default", "cpu_split"):
      run = str(tmp_path / f"{method[0]}_{method[1:2]}_{strategy}")
      _train(run, f"--method={method[0]}", *method[1:], *one_step, f"--strategy={strategy}")
      losses.append(_log(run)[0]["loss"])
      if strategy == "cpu_split":
        assert {r["replicas"] for r in _log(run, "timing.jsonl")} == {2}
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5, err_msg=method[0])
