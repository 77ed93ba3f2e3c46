"""Resuming an interrupted evaluation where it stopped, batch by batch.

AutoAttack on 10,000 MNIST images takes an hour or more on a CPU. After each batch, `run_eval`
keeps that batch's per-example results (`anp.evaluation.eval_net.run_steps`) in
`<eval_dir>/eval_partial/<phase>/` (phase: `whitebox`, `blackbox`), beside a key naming
everything they depend on: the evaluation's settings, the test images and labels, and the
weights of the evaluated and source models. Run again with the same key, the evaluation loads
the finished batches and goes on with the next one; with any other key it starts afresh.
`eval_partial/` is removed once eval.json is written, and eval.json's `resumed_examples`
says how many examples of each phase came from an earlier, interrupted run.

The batches after an interruption draw other random starts than an uninterrupted run would
(the attacks' random generators are not rewound), so a resumed evaluation agrees with an
uninterrupted one within the attacks' sampling noise, not to the digit; with deterministic
attacks it agrees exactly.
"""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np

from anp.atomic import savez_whole, write_whole
from anp.runs.logs import latest_checkpoint_name

PARTIAL_DIR = "eval_partial"
# Files that identify a model's weights (a checkpoint's index keeps each tensor's checksum):
# a SavedModel's graph and variable index; a run's latest checkpoint (`model_fingerprint`).
_WEIGHT_FILES = ("saved_model.pb", os.path.join("variables", "variables.index"))


def _sha256(*chunks):
  digest = hashlib.sha256()
  for chunk in chunks:
    digest.update(chunk)
  return digest.hexdigest()


def model_fingerprint(path):
  """{file: sha256} of the files that identify the weights at `path`: a run directory's
  latest checkpoint index, a SavedModel's graph and variable index, or an original
  checkpoint prefix's index."""
  latest = os.path.isdir(path) and latest_checkpoint_name(path)
  names = _WEIGHT_FILES + ((f"{latest}.index",) if latest else ())
  files = [os.path.join(path, name) for name in names] + [f"{path}.index"]
  found = {}
  for file in files:
    if os.path.isfile(file):
      with open(file, "rb") as f:
        found[os.path.basename(file)] = _sha256(f.read())
  return found


def evaluation_key(cfg, x, y):
  """What an evaluation's results depend on: its settings (the resolved Config), the test
  images and labels it evaluates, and the weights of the evaluated and source models."""
  return dict(settings=dataclasses.asdict(cfg),
              data=_sha256(np.ascontiguousarray(x).tobytes(),
                           np.ascontiguousarray(y).tobytes()),
              model=model_fingerprint(cfg.model_dir),
              source=model_fingerprint(cfg.source_model_dir) if cfg.source_model_dir else None)


class BatchStore:
  """The finished batches of one evaluation phase, kept in `folder` under `key`.

  `done()` gives their outputs in order (dicts of NumPy arrays, as `run_steps` reads them);
  `add(i, outputs)` keeps batch i's, written whole (a kill mid-write leaves no batch file).
  A folder holding another key is removed on creation; the folder and its key are written
  with the first batch.
  """

  def __init__(self, folder, key):
    self.folder, self.key_path = folder, os.path.join(folder, "key.json")
    self.text = json.dumps(key, sort_keys=True, default=str)
    if os.path.isfile(self.key_path):
      with open(self.key_path) as f:
        if f.read() == self.text:
          return
    shutil.rmtree(folder, ignore_errors=True)

  def _path(self, index):
    return os.path.join(self.folder, f"batch_{index:05d}.npz")

  def done(self):
    outputs = []
    while os.path.isfile(self._path(len(outputs))):
      with np.load(self._path(len(outputs))) as f:
        outputs.append({k: f[k] for k in f.files})
    return outputs

  def add(self, index, outputs):
    if not os.path.isfile(self.key_path):  # the folder appears with the first batch
      os.makedirs(self.folder, exist_ok=True)
      write_whole(self.key_path, self.text)
    savez_whole(self._path(index), outputs)


def stores(out_dir, key, enabled=True):
  """{phase: BatchStore} under `<out_dir>/eval_partial` for 'whitebox' and 'blackbox';
  {phase: None} when not `enabled` (e.g. a worker of a multi-worker evaluation)."""
  phases = ("whitebox", "blackbox")
  if not enabled:
    return dict.fromkeys(phases)
  return {phase: BatchStore(os.path.join(out_dir, PARTIAL_DIR, phase), dict(key, phase=phase))
          for phase in phases}


def remove(out_dir):
  """Removes `<out_dir>/eval_partial` (once eval.json is written)."""
  shutil.rmtree(os.path.join(out_dir, PARTIAL_DIR), ignore_errors=True)
