"""anp command line: python main.py --mode=train|eval|prune|export|report [flags]."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CUDA / oneDNN notices look like failures

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import flags  # noqa: E402,F401  (defines the flags)
from anp.errors import UserError  # noqa: E402

absl_flags.adopt_module_key_flags(flags)  # --help lists the anp flags


def _import_tensorflow_quietly():
  """Imports TF (and TFP) with stderr closed at the file-descriptor level: their C++ start-up
  notices ("failed call to cuInit", oneDNN, absl::InitializeLog) look like failures and
  ignore TF_CPP_MIN_LOG_LEVEL. A failing import still raises, with stderr back in place."""
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # noqa: F401
    import tensorflow_probability  # noqa: F401
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def run(cfg, arrays=None):
  """Runs one mode of a Config; `arrays` overrides data loading (tests)."""
  if cfg.mode == "train":
    from anp.train import run_train
    return run_train(cfg, arrays)
  if cfg.mode == "eval":
    from anp.evaluate import run_eval
    return run_eval(cfg, arrays)
  if cfg.mode in ("prune", "export"):
    from anp.export import run_export
    return run_export(cfg, arrays)
  if cfg.mode == "report":
    from anp.report import run_report
    return run_report(cfg)
  if cfg.mode == "quickstart":
    from anp.quickstart import run_quickstart
    return run_quickstart(cfg)
  raise UserError(f"Flag --mode={cfg.mode} is not implemented.")


def main(argv):
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # checkpoint sharding INFO lines
  _import_tensorflow_quietly()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    run(flags.config_from_flags())
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print("\nInterrupted. Completed epochs are checkpointed in --model_dir; run the same "
          "command again to resume.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  app.run(main)
