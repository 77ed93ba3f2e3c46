"""Run directories: exact resume after kill -9, and refusals that protect a saved run."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO, SHARED_DATA, have_real_data, results_script, run_main

needs_data = unittest.skipUnless(have_real_data(), f"real MNIST not found in {SHARED_DATA}")

TRAIN = ["--mode=train", "--dataset=mnist", "--method=anp_vs", "--epochs=2",
         "--steps_per_epoch=40", "--train_attack_steps=2", "--val_examples=64",
         "--checkpoint_every=5", f"--data_dir={SHARED_DATA}"]


def command(run, *extra):
  return [sys.executable, os.path.join(REPO, "main.py"), *TRAIN, f"--model_dir={run}", *extra]


def main_py(run, *extra):
  return subprocess.run(command(run, *extra), capture_output=True, text=True, timeout=600,
                        cwd=REPO)


def checkpoint_tensors(run):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def log_records(run):
  with open(os.path.join(run, "train_log.jsonl")) as f:
    return [json.loads(line) for line in f]


@needs_data
@pytest.mark.slow
class ExactResumeTest(tf.test.TestCase):

  def test_kill_9_mid_epoch_then_same_command_equals_uninterrupted_run(self):
    whole = os.path.join(self.get_temp_dir(), "whole")
    out = main_py(whole)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])

    killed = os.path.join(self.get_temp_dir(), "killed")
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 300
    marker = os.path.join(killed, "ckpt-45.index")  # mid-epoch 2 (steps 41..80)
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    self.assertIsNone(proc.poll(), "the run ended before it could be killed mid-epoch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertFalse(os.path.exists(os.path.join(killed, "ckpt-80.index")))

    out = main_py(killed)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("Resuming", out.stdout)
    a, b = checkpoint_tensors(whole), checkpoint_tensors(killed)
    self.assertEqual(sorted(a), sorted(b))
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    self.assertEqual(log_records(whole), log_records(killed))
    self.assertEqual([r["epoch"] for r in log_records(whole)], [1, 2])

    # The finished run says so and changes nothing.
    out = main_py(killed)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("already trained for 2 epochs; nothing to do", out.stdout)
    self.assertNotIn("Resuming", out.stdout)
    # ... and knows it from the folder alone, without importing TensorFlow.
    out, _ = run_main(*command(killed)[2:])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("already trained for 2 epochs; nothing to do", out.stdout)
    self.assertIn("tensorflow imported: False", out.stderr)

    # A kill between logging epoch 2 and writing its checkpoint: the log is ahead of the
    # latest checkpoint (mid-epoch step 75), so the run resumes there and ends the same.
    with open(os.path.join(killed, "checkpoint"), "w") as f:
      f.write('model_checkpoint_path: "ckpt-75"\nall_model_checkpoint_paths: "ckpt-75"\n')
    out = main_py(killed)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("Resuming from", out.stdout)
    self.assertTrue(tf.train.latest_checkpoint(killed).endswith("ckpt-80"))
    b = checkpoint_tensors(killed)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    self.assertEqual(log_records(whole), log_records(killed))

  def test_other_model_flags_are_refused_and_the_run_is_kept(self):
    run = os.path.join(self.get_temp_dir(), "run")
    out = main_py(run, "--epochs=1")
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(run, "eval.json"), "w") as f:
      f.write("{}")
    before = checkpoint_tensors(run)
    out = main_py(run, "--epochs=1", "--method=standard", "--batch_size=32")
    self.assertEqual(out.returncode, 2)
    error = out.stderr.strip().splitlines()[-1]
    for text in ("--method=anp_vs", "--method=standard", "--batch_size=64", "new --model_dir"):
      self.assertIn(text, error)
    self.assertNotIn("Traceback", out.stderr)
    self.assertEqual(json.load(open(os.path.join(run, "config.json")))["method"], "anp_vs")
    after = checkpoint_tensors(run)
    for key in before:
      np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    self.assertTrue(os.path.exists(os.path.join(run, "eval.json")))

    # More epochs is a schedule change: allowed, said, and the old eval.json goes.
    out = main_py(run, "--epochs=2", "--steps_per_epoch=40")
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("--epochs=2 instead of 1", out.stdout)
    self.assertFalse(os.path.exists(os.path.join(run, "eval.json")))
    self.assertEqual([r["epoch"] for r in log_records(run)], [1, 2])


class SeededRandomnessTest(tf.test.TestCase):

  def test_training_batches_depend_only_on_seed_and_step(self):
    from anp.data import training_batches
    x = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    y = np.arange(10, dtype=np.int32)

    def labels(start, n, seed=3, augment=False):
      ds = training_batches(x, y, 3, seed=seed, start_step=start, augment=augment)
      return [(b[0].numpy(), b[1].numpy()) for b in ds.take(n)]

    whole = labels(0, 9)
    for start in (1, 3, 4, 7):  # 3 batches a pass: mid-pass and pass boundaries
      for (xa, ya), (xb, yb) in zip(whole[start:], labels(start, 9 - start)):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    for p in range(3):  # each pass: 9 distinct examples of the 10, a new order each time
      seen = np.concatenate([b[1] for b in whole[3 * p:3 * p + 3]])
      self.assertLen(set(seen.tolist()), 9)
    self.assertNotAllEqual(np.concatenate([b[1] for b in whole[:3]]),
                           np.concatenate([b[1] for b in whole[3:6]]))
    self.assertNotAllEqual(whole[0][1], labels(0, 1, seed=4)[0][1])
    aug = labels(2, 2, augment=True)
    np.testing.assert_array_equal(aug[1][0], labels(3, 1, augment=True)[0][0])

  def test_mask_noise_is_a_function_of_the_seed(self):
    from models.lenet import LeNet5
    net = LeNet5()
    x = tf.random.uniform([4, 28, 28, 1], seed=1)
    seed = tf.constant([5, 6], tf.int64)
    a = net(x, training=True, seed=seed)
    np.testing.assert_array_equal(a, net(x, training=True, seed=seed))
    self.assertNotAllClose(a, net(x, training=True, seed=tf.constant([5, 7], tf.int64)))


class RunDirErrorTest(tf.test.TestCase):

  def assert_one_line_error(self, out, *texts):
    self.assertEqual(out.returncode, 2, out.stderr[-2000:])
    self.assertNotIn("Traceback", out.stderr)
    for text in texts:
      self.assertIn(text, out.stderr)

  def test_model_dir_that_is_a_file(self):
    path = os.path.join(self.get_temp_dir(), "a_file")
    open(path, "w").close()
    self.assert_one_line_error(main_py(path), "--model_dir", "is a file")

  def test_export_dir_that_is_a_file(self):
    path = os.path.join(self.get_temp_dir(), "export_file")
    open(path, "w").close()
    out = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=prune",
                          f"--model_dir={self.get_temp_dir()}", f"--export_dir={path}"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    self.assert_one_line_error(out, "--export_dir", "is a file")

  def test_missing_init_from_leaves_no_folder(self):
    run = os.path.join(self.get_temp_dir(), "new_run")
    missing = os.path.join(self.get_temp_dir(), "no_such_run")
    self.assert_one_line_error(main_py(run, f"--init_from={missing}"), "--init_from", missing)
    self.assertFalse(os.path.exists(run))

  @unittest.skipIf(os.geteuid() == 0, "root may write anywhere")
  def test_unwritable_parent(self):
    parent = os.path.join(self.get_temp_dir(), "locked")
    os.makedirs(parent)
    os.chmod(parent, 0o500)
    self.assert_one_line_error(main_py(os.path.join(parent, "run")), "cannot write")


def test_finished_reads_the_run_folder_and_answers_only_when_sure(tmp_path):
  """anp.runs.logs.finished: the records of a run trained to cfg.epochs with cfg's flags whose
  latest checkpoint is its last epoch's; None for anything else."""
  from anp.config import Config, run_config_path
  from anp.runs.logs import finished
  run = tmp_path / "run"
  run.mkdir()
  cfg = Config(method="standard", epochs=2, steps_per_epoch=4, model_dir=str(run)).resolved()
  assert finished(cfg) is None  # nothing there
  cfg.save(run_config_path(str(run)))
  (run / "train_log.jsonl").write_text('{"epoch": 1, "step": 4}\n{"epoch": 2, "step": 8}\n')
  (run / "ckpt-8.index").write_text("")
  (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-8"\n')
  assert [r["epoch"] for r in finished(cfg)] == [1, 2]
  assert finished(Config(**dict(vars(cfg), epochs=3)).resolved()) is None
  assert finished(Config(**dict(vars(cfg), epochs=1)).resolved()) is None  # a schedule change
  assert finished(Config(**dict(vars(cfg), seed=3)).resolved()) is None  # another run's flags
  (run / "train_log.jsonl").write_text('{"epoch": 1, "step": 4}\n{"epoch": 2, "step": 8}\n{"ep')
  assert [r["epoch"] for r in finished(cfg)] == [1, 2]  # a torn last line
  (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-6"\n')  # log ahead of it
  (run / "ckpt-6.index").write_text("")
  assert finished(cfg) is None
  (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-8"\n')
  (run / "ckpt-8.index").unlink()  # named but missing
  assert finished(cfg) is None


def test_chunks_of_a_timing_log():
  """results/chunks.py: a gap or another machine starts a chunk; parts of epochs are not
  counted as whole epochs."""
  chunks = results_script("chunks")
  a, b = "AMD EPYC, 2 cores, TF 2.21.0", "NVIDIA H200"
  lines = [dict(epoch=1, steps=100, wall_s=60.0, started="2026-12-01T10:00:00", machine=a),
           dict(epoch=2, steps=40, wall_s=30.0, started="2026-12-01T10:01:00", machine=a),
           # 11 min after the part of epoch 2 ended: the next run resumes epoch 2.
           dict(epoch=2, steps=60, wall_s=40.0, started="2026-12-01T10:12:30", machine=a),
           dict(epoch=3, steps=100, wall_s=80.0, started="2026-12-01T10:13:10", machine=a),
           dict(epoch=4, steps=100, wall_s=9.0, started="2026-12-01T10:14:30", machine=b)]
  got = chunks.chunks(lines, gap_min=10)
  assert [c["epochs"] for c in got] == [[1, 2], [2, 3], [4, 4]]
  assert [c["epoch_s"] for c in got] == [[60.0, 60.0], [80.0, 80.0], [9.0, 9.0]]
  assert [c["wall_min"] for c in got] == [1.5, 2.0, 0.1]
  assert [c["machine"] for c in got] == [a, a, b]
  assert len(chunks.chunks(lines, gap_min=12)) == 2


if __name__ == "__main__":
  tf.test.main()
