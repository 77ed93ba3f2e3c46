r"""anp: adversarially robust and sparse networks (ANP-VS, ICML 2020) in TF 2 / Keras.

python main.py --mode=MODE [flags]; every flag is listed below. By mode:

  quickstart  the whole MNIST pipeline in one command (about 5 minutes on 2 cores)
      python main.py --mode=quickstart --data_dir=../shared/data
  train       --dataset --method --model_dir --init_from --epochs --seed --checkpoint_every,
              loss weights (--beta --lambda_vs --adv_weight ...), training attack (--eps ...),
              devices (--strategy --mixed_precision --jit_compile --deterministic_ops)
      python main.py --mode=train --dataset=mnist --method=anp_vs --data_dir=../shared/data \
          --init_from=runs/mnist_standard --model_dir=runs/mnist_anp_vs
              HYDRA / LWM (--method=hydra): --hydra_stage --prune_ratio --hydra_granularity
              --hydra_scores --hydra_objective, stages chained by --init_from (README)
              AWT's ticket search (--method=awt): --prune_ratio --awt_kernel_weight --awt_l2
              --awt_ntk_examples --awt_remask_every, then a HYDRA finetune of it (README)
  eval        --model_dir --attack --attack_steps --restarts --eot_samples --eval_examples
              --source_model_dir --sanity_checks --strategy
      python main.py --mode=eval --model_dir=runs/mnist_anp_vs --data_dir=../shared/data \
          --attack=strongest --sanity_checks
  prune       compact SavedModel of a masked run: --model_dir --export_dir --thres
      python main.py --mode=prune --model_dir=runs/mnist_anp_vs --export_dir=export/anp_vs
  export      SavedModel of any run, unpruned: --model_dir --export_dir
      python main.py --mode=export --model_dir=runs/mnist_at --export_dir=export/at
  report      table and figures of several evaluated runs: --runs --report_dir
      python main.py --mode=report --runs=runs/a,runs/b --report_dir=report

User errors print one line and exit with status 2. Flag values, ranges and paths are checked
before TensorFlow is imported, so such an error comes at once; the method's own checks and
what the directories hold are checked after.
"""

import contextlib
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import flags  # noqa: E402,F401  (defines the flags)
from anp.errors import UserError  # noqa: E402
from anp.runs.paths import check_paths  # noqa: E402

absl_flags.adopt_module_key_flags(flags)  # --help lists the anp flags


@contextlib.contextmanager
def _quiet_stderr():
  """stderr closed at the file-descriptor level: TF's (and TFP's) C++ start-up notices
  ("failed call to cuInit", oneDNN, absl::InitializeLog) look like failures and ignore
  TF_CPP_MIN_LOG_LEVEL. An exception leaves with stderr back in place."""
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _import_tensorflow_quietly():
  with _quiet_stderr():
    import tensorflow  # noqa: F401
    import tensorflow_probability  # noqa: F401


def run(cfg, arrays=None, command=None):
  """Runs one mode of a Config; `arrays` overrides data loading (tests); `command`, the
  command line, is recorded in eval.json."""
  if cfg.mode == "train":
    from anp.training.train import run_train
    return run_train(cfg, arrays)
  if cfg.mode == "eval":
    from anp.evaluation.evaluate import run_eval
    return run_eval(cfg, arrays, command=command)
  if cfg.mode in ("prune", "export"):
    from anp.deploy.export import run_export
    return run_export(cfg, arrays)
  if cfg.mode == "report":
    from anp.evaluation.report import run_report
    return run_report(cfg)
  if cfg.mode == "quickstart":
    from anp.quickstart import run_quickstart
    return run_quickstart(cfg)
  raise UserError(f"Flag --mode={cfg.mode} is not implemented.")


def check(cfg):
  """The checks that need no TensorFlow, so that a bad flag is refused at once: every flag's
  value and range (`Config.validate` without the method's own checks), the paths
  (`check_paths`). The method's checks (`Method.validate`, `Method.check_init_from`) and what
  is inside the directories come after TensorFlow is imported."""
  cfg.validate(method_checks=False)
  check_paths(cfg)


def _finished(cfg):
  """True after printing that a finished run has nothing to do, where its folder alone says
  so (`anp.runs.logs.finished`): re-running a finished command needs no TensorFlow."""
  from anp.config import run_config_path
  from anp.runs.logs import finished, nothing_to_do
  if not os.path.isfile(run_config_path(cfg.model_dir)):
    return False
  with _quiet_stderr():  # resolving may import a method's module, and TensorFlow with it
    records = finished(cfg.resolved())
  if records is None:
    return False
  print(nothing_to_do(cfg, records[-1]["epoch"]))
  return True


def main(argv):
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # checkpoint sharding INFO lines
  if len(argv) > 1:
    print(f"error: unexpected arguments: {' '.join(argv[1:])}; flags are --name=value",
          file=sys.stderr)
    sys.exit(2)
  try:
    cfg = flags.config_from_flags()
    check(cfg)
    if cfg.mode == "train" and _finished(cfg):
      return
    _import_tensorflow_quietly()
    run(cfg, command=shlex.join(["python", "main.py", *sys.argv[1:]]))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print("\nInterrupted. Completed epochs are checkpointed in --model_dir; run the same "
          "command again to resume.", file=sys.stderr)
    sys.exit(130)


def parse_flags(argv):
  """absl's parser, but a bad flag is a user error like any other: one line, status 2."""
  try:
    return absl_flags.FLAGS(argv)
  except absl_flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def print_help(args):
  """True after printing the help that `args` ask for: absl's help flags exit with status 1,
  but asking for help is not an error. --helpfull adds absl's own flags; --helpxml is absl's
  XML of every flag."""
  asked = [a for a in args
           if a in ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")]
  if not asked:
    return False
  if "--helpxml" in asked:
    absl_flags.FLAGS.write_help_in_xml_format(sys.stdout)
    return True
  print(__doc__)
  if "--helpfull" in asked:
    print(absl_flags.FLAGS.get_help())
  else:
    print(absl_flags.FLAGS.main_module_help())
  return True


def cli():
  """The `anp` command: main.py's."""
  if print_help(sys.argv[1:]):
    sys.exit(0)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
