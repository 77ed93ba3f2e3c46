"""An interrupted evaluation goes on from its last finished batch (anp.evaluation.resume)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from anp.config import Config
from anp.evaluation import eval_net, evaluate, resume
from tests.helpers import SHARED_DATA, have_real_data, mnist_slice


class Stop(Exception):
  pass


def _step(calls):
  """A deterministic eval step over x of shape [B, 2]: per-example outputs and summed
  vulnerabilities derived from x; `calls` counts the batches it ran."""
  def step(x, y):
    calls.append(int(x.shape[0]))
    return dict(clean=x[:, 0] > 0.3, adv=x[:, 0] > 0.6, per_attack=tf.stack([x[:, 1] > 0.5]),
                linf=x[:, 1], layer_vul=tf.reduce_sum(x, 0), unit_vul=tf.reduce_sum(x * x, 0))
  return step


def _dataset():
  x = tf.random.stateless_uniform([70, 2], [3, 4])
  return tf.data.Dataset.from_tensor_slices((x, tf.zeros([70], tf.int32))).batch(16)


def test_run_steps_resumes_after_the_last_finished_batch(tmp_path):
  straight = eval_net.run_steps(_step([]), _dataset(), 70, names=("a",), verbose=False)
  key = dict(settings="s")

  def stop_after(n):
    calls = []
    inner = _step(calls)
    def step(x, y):
      if len(calls) == n:
        raise Stop()
      return inner(x, y)
    return step

  with pytest.raises(Stop):  # three of five batches kept
    eval_net.run_steps(stop_after(3), _dataset(), 70, names=("a",), verbose=False,
                       store=resume.BatchStore(str(tmp_path), key))
  calls = []
  resumed = eval_net.run_steps(_step(calls), _dataset(), 70, names=("a",), verbose=False,
                               store=resume.BatchStore(str(tmp_path), key))
  assert calls == [16, 6]  # only the last two batches ran
  assert resumed.pop("resumed_examples") == 48 and straight.pop("resumed_examples") == 0
  outcomes = resumed.pop("outcomes"), straight.pop("outcomes")
  assert resumed == straight
  for key in ("clean", "robust", "per_attack"):  # each example's verdicts, in order
    np.testing.assert_array_equal(outcomes[0][key], outcomes[1][key])
  assert outcomes[0]["per_attack"].shape == (1, 70)
  # Another key starts afresh.
  calls = []
  other = eval_net.run_steps(_step(calls), _dataset(), 70, names=("a",), verbose=False,
                             store=resume.BatchStore(str(tmp_path), dict(settings="t")))
  assert calls == [16] * 4 + [6] and other["resumed_examples"] == 0


def test_batch_store_keeps_whole_batches_and_its_key(tmp_path):
  store = resume.BatchStore(str(tmp_path / "p"), dict(a=1))
  store.add(0, dict(clean=np.array([True, False])))
  store.add(2, dict(clean=np.array([True])))  # not after a finished batch 1: not read
  done = resume.BatchStore(str(tmp_path / "p"), dict(a=1)).done()
  assert len(done) == 1 and done[0]["clean"].tolist() == [True, False]
  assert resume.BatchStore(str(tmp_path / "p"), dict(a=2)).done() == []
  assert not (tmp_path / "p").exists()  # another key's batches are gone; none kept yet


def test_model_fingerprint_follows_the_latest_checkpoints_weights(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"\n')
  (run / "ckpt-5.index").write_bytes(b"tensor checksums a")
  first = resume.model_fingerprint(str(run))
  (run / "ckpt-5.index").write_bytes(b"tensor checksums b")  # retrained: same name
  assert list(first) == ["ckpt-5.index"] and resume.model_fingerprint(str(run)) != first
  assert resume.model_fingerprint(str(tmp_path / "none")) == {}


@pytest.mark.skipif(not have_real_data(), reason=f"real MNIST not found in {SHARED_DATA}")
def test_interrupted_eval_resumes_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
  from anp.training.train import run_train
  run = str(tmp_path / "run")
  arrays = mnist_slice(n_train=1024, n_test=160)
  run_train(Config(mode="train", dataset="mnist", method="standard", epochs=1,
                   steps_per_epoch=30, val_examples=0, model_dir=run), arrays)
  # FGSM is deterministic, so a resumed white box must equal an uninterrupted one exactly.
  cfg = Config(mode="eval", model_dir=run, eval_examples=160, eval_batch=64, attack="fgsm",
               eps=0.1, attack_steps=5, source_model_dir=run)
  straight = evaluate.run_eval(Config(**{**vars(cfg), "eval_dir": str(tmp_path / "a")}),
                               arrays, verbose=False)
  assert "resumed_examples" not in straight
  assert not os.path.exists(tmp_path / "a" / resume.PARTIAL_DIR)

  split = str(tmp_path / "b")
  add = resume.BatchStore.add
  def add_then_stop(store, index, outputs):  # stops after the black box's first batch
    add(store, index, outputs)
    if store.folder.endswith("blackbox"):
      raise Stop()
  monkeypatch.setattr(resume.BatchStore, "add", add_then_stop)
  with pytest.raises(Stop):
    evaluate.run_eval(Config(**{**vars(cfg), "eval_dir": split}), arrays, verbose=False)
  monkeypatch.setattr(resume.BatchStore, "add", add)
  assert not os.path.exists(os.path.join(split, "eval.json"))
  partial = os.path.join(split, resume.PARTIAL_DIR)
  assert sorted(os.listdir(os.path.join(partial, "whitebox"))) == [
      "batch_00000.npz", "batch_00001.npz", "batch_00002.npz", "key.json"]

  # Other settings do not read the kept batches (and discard them).
  other = evaluate.run_eval(Config(**{**vars(cfg), "eval_dir": split, "eps": 0.2,
                                      "source_model_dir": None}), arrays, verbose=False)
  assert "resumed_examples" not in other and not os.path.exists(partial)

  with pytest.raises(Stop):
    monkeypatch.setattr(resume.BatchStore, "add", add_then_stop)
    evaluate.run_eval(Config(**{**vars(cfg), "eval_dir": split}), arrays, verbose=False)
  monkeypatch.setattr(resume.BatchStore, "add", add)
  resumed = evaluate.run_eval(Config(**{**vars(cfg), "eval_dir": split}), arrays,
                              verbose=False)
  assert resumed["resumed_examples"] == dict(whitebox=160, blackbox=64)
  for key in ("clean_acc", "adv_acc", "per_attack", "vulnerability", "layer_vulnerability",
              "unit_vulnerability", "max_linf", "examples"):
    assert resumed[key] == straight[key], key
  assert resumed["blackbox"]["adv_acc"] is not None
  assert not os.path.exists(partial)
  with open(os.path.join(split, "eval.json")) as f:
    assert json.load(f)["resumed_examples"]["whitebox"] == 160
