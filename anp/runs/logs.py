"""A run folder's JSON-lines logs and whether its training is over, read without TensorFlow.

* `read_json_lines(path)`: the records of train_log.jsonl or timing.jsonl. Training appends
  one line per epoch; a run killed while writing may leave its last line torn, which is
  dropped (training redoes that epoch); any other line that is not JSON is damage and raises.
* `finished(cfg)`: the train_log records of a run that has already trained `cfg.epochs`
  epochs with the same flags, or None where only restoring its checkpoint can tell. main.py
  asks it before importing TensorFlow, so that re-running a finished command (as
  results/mnist/run.sh does for every finished row) answers at once.
"""

import json
import os
import re

from anp.config import Config, run_config_path
from anp.runs.paths import RunError


def read_json_lines(path):
  """[dict] of a JSON-lines file, [] without one; a torn last line is dropped."""
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise RunError(f"{path}: line {i + 1} is not JSON; the log is damaged.") from None
  return records


def latest_checkpoint_name(run_dir):
  """The file name of the latest checkpoint that run_dir/checkpoint names (e.g. 'ckpt-937'),
  or None. The same answer as tf.train.latest_checkpoint for the files CheckpointManager
  writes, but only where that checkpoint's index file is there too."""
  try:
    with open(os.path.join(run_dir, "checkpoint")) as f:
      found = re.search(r'^model_checkpoint_path: "([^"]+)"$', f.read(), re.MULTILINE)
  except OSError:
    return None
  name = found and os.path.basename(found.group(1))
  return name if name and os.path.isfile(os.path.join(run_dir, name + ".index")) else None


def finished(cfg):
  """The train_log records of `cfg.model_dir` when it holds a run with cfg's run flags and
  epochs whose latest checkpoint is the one written at the end of its last logged epoch, and
  that epoch is cfg.epochs or later; None otherwise (training then restores the checkpoint
  and decides). `cfg` is resolved.

  Training logs an epoch just before it writes that epoch's checkpoint, numbered by the step:
  a log ahead of the checkpoint (a run killed in between) gives None here."""
  config = run_config_path(cfg.model_dir)
  if not os.path.isfile(config):
    return None
  saved = Config.load(config).resolved()
  if cfg.differing(saved, (*cfg.run_keys, "epochs")):
    return None
  records = read_json_lines(os.path.join(cfg.model_dir, "train_log.jsonl"))
  if not records or records[-1]["epoch"] < cfg.epochs:
    return None
  if latest_checkpoint_name(cfg.model_dir) != f"ckpt-{records[-1]['step']}":
    return None
  return records


def nothing_to_do(cfg, epoch):
  """The line training prints when a run has already trained `epoch` >= cfg.epochs epochs."""
  return f"{cfg.model_dir}: already trained for {epoch} epochs; nothing to do."
