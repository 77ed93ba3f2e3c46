"""The path flags' checks, which need no TensorFlow: main.py runs them before importing it, so
that a mistyped path is refused at once."""

import os

from anp.errors import DataError, UserError


class RunError(UserError):
  """A model directory or checkpoint that cannot be used; the message says why."""


def check_writable_dir(path, flag):
  """RunError unless `path` is a directory, or can be made one, that we may write in."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise RunError(f"Flag {flag}: {path!r} is a file; expected a directory.")
  parent = os.path.abspath(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise RunError(f"Flag {flag}: cannot write in {parent!r} (permission denied).")


def check_model(path, flag, saved_model=False):
  """RunError unless `path` is a directory or a checkpoint prefix (its '.index' file exists)."""
  if not (os.path.isdir(path) or os.path.isfile(path + ".index")):
    what = "a file" if os.path.exists(path) else "missing"
    raise RunError(f"Flag {flag}: {path!r} is {what}; expected a run directory"
                   f"{', a SavedModel directory' if saved_model else ''} or a checkpoint "
                   "prefix (a path whose '.index' file exists).")


def check_paths(cfg):
  """UserError for a path flag of `cfg` that its --mode cannot use: a --data_dir that is no
  directory, a missing model or --init_from, an output directory that is a file or cannot be
  written. What is inside the directories is checked later, once TensorFlow is loaded."""
  if cfg.data_dir and not os.path.isdir(cfg.data_dir):
    raise DataError(f"Flag --data_dir: {cfg.data_dir!r} does not exist or is not a directory; "
                    "expected the folder of the raw data archives.")
  if cfg.mode in ("train", "quickstart"):
    check_writable_dir(cfg.model_dir, "--model_dir")
  if cfg.mode == "train" and cfg.init_from:
    check_model(cfg.init_from, "--init_from")
  if cfg.mode in ("eval", "prune", "export"):
    check_model(cfg.model_dir, "--model_dir", saved_model=cfg.mode == "eval")
  if cfg.mode == "eval" and cfg.source_model_dir:
    check_model(cfg.source_model_dir, "--source_model_dir", saved_model=True)
  outputs = dict(eval=("eval_dir",), prune=("export_dir",), export=("export_dir",),
                 report=("report_dir",))
  for name in outputs.get(cfg.mode, ()):
    if getattr(cfg, name):
      check_writable_dir(getattr(cfg, name), f"--{name}")
  if cfg.mode in ("prune", "export") and not cfg.export_dir:
    raise UserError(f"Flag --export_dir is required with --mode={cfg.mode}.")
  if cfg.mode == "report":
    runs = [r.strip() for r in (cfg.runs or "").split(",") if r.strip()]
    if not runs:
      raise UserError("Flag --runs: expected comma-separated run directories evaluated by "
                      f"--mode=eval. Received: {cfg.runs!r}")
    for run in runs:
      check_model(run, "--runs")
