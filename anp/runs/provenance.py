"""How a training run was made, read from its folder alone (no TensorFlow).

* `train_command(cfg, run_dir)`: its `--mode=train` command, the identity flags that differ
  from the data set's and method's defaults;
* `stages(run_dir, rows)`: the runs that made it, earliest first: its `--init_from` followed
  back while that is a training run and not one of `rows` (e.g. ADMM's search before its
  retraining, but not the Standard row an ANP-VS row starts from);
* `stage_commands(run_dir, rows)`: the training commands of those stages;
* `trained(run_dir)`: how far it trained (`train_log.jsonl`) and its wall time and machines
  (`timing.jsonl`, one line per epoch or part of one);
* `provenance_section(names, runs, results)`: the markdown section of `--mode=report` that
  lists them per row, with the evaluation command each eval.json recorded.
"""

import dataclasses
import os

from anp.config import Config, run_config_path
from anp.runs.logs import read_json_lines


def _flag(key, value):
  if isinstance(value, bool):
    return f"--{key}" if value else f"--no{key}"
  return f"--{key}={value}"


def _config(run_dir):
  return Config.load(run_config_path(run_dir)).resolved()


def train_command(cfg, run_dir):
  """The --mode=train command of a run: the keys of its identity other than what the data
  set, the method and the run's other keys give them (e.g. no --weight_decay where the
  method's adversarial objective sets it)."""
  args = ["python main.py --mode=train", f"--dataset={cfg.dataset}", f"--method={cfg.method}"]
  args += [_flag(k, getattr(cfg, k)) for k in [*cfg.run_keys, "epochs"]
           if k not in ("dataset", "method") and getattr(cfg, k) is not None
           and getattr(cfg, k) != _default(cfg, k)]
  return " ".join(args + ["--data_dir=DATA", f"--model_dir={run_dir}"])


def _default(cfg, key):
  """The value `key` takes in `cfg` when its flag is not given."""
  default = Config.__dataclass_fields__[key].default
  if default is not None:
    return default
  return getattr(dataclasses.replace(cfg, **{key: None}).resolved(), key)


def is_training_run(path):
  """Whether `path` is a training run's folder (its config.json and train_log.jsonl)."""
  return bool(path) and os.path.isfile(run_config_path(path)) and os.path.isfile(
      os.path.join(path, "train_log.jsonl"))


def stages(run_dir, rows=()):
  """[run folder] of the trainings that made `run_dir`, earliest first, `run_dir` last."""
  chain, listed = [run_dir], {os.path.realpath(r) for r in rows}
  while True:
    source = _config(chain[0]).init_from
    if (not is_training_run(source) or os.path.realpath(source) in listed
        or os.path.realpath(source) in {os.path.realpath(c) for c in chain}):
      return chain
    chain.insert(0, source)


def stage_commands(run_dir, rows=()):
  """The --mode=train commands of `stages(run_dir, rows)`, earliest first."""
  return [train_command(_config(stage), stage) for stage in stages(run_dir, rows)]


def trained(run_dir):
  """dict(epoch, epochs, step, wall_h, machines): the last epoch logged of the scheduled
  epochs, its step, the hours summed over timing.jsonl (None without one) and the machines it
  names."""
  log = read_json_lines(os.path.join(run_dir, "train_log.jsonl"))
  timing = read_json_lines(os.path.join(run_dir, "timing.jsonl"))
  return dict(epoch=log[-1]["epoch"] if log else 0, epochs=_config(run_dir).epochs,
              step=log[-1]["step"] if log else 0,
              wall_h=sum(t["wall_s"] for t in timing) / 3600 if timing else None,
              machines=sorted({t["machine"] for t in timing}))


def _hours(values):
  if any(v is None for v in values):
    return "n/a"
  text = " + ".join(f"{v:.2f}" for v in values)
  return text if len(values) == 1 else f"{text} = {sum(values):.2f}"


def provenance_section(names, runs, results):
  """Markdown lines: per row its training stages (epochs trained of scheduled), training wall
  time and machines, then each row's commands: its trainings, and its evaluation where the
  eval.json in `results` recorded one."""
  lines = ["## How each row was made", "",
           "Training wall time: the seconds of each stage's epochs in its timing.jsonl as "
           "logged (time paused or shared with other jobs included, the evaluation not). A "
           "row lists the runs it was trained from (--init_from) unless they are rows of this "
           "report themselves. DATA in the training commands: the folder of the data "
           "archives; the evaluation command is the one eval.json recorded (evaluations made "
           "before it was recorded have none).", "",
           "| Model | Stages (epochs trained of scheduled) | Training wall time (h) | Machine |",
           "| --- | --- | --- | --- |"]
  commands = []
  for name, run, result in zip(names, runs, results):
    evaluation = [result["command"]] if result.get("command") else []
    if not is_training_run(run):
      lines.append(f"| {name} | not a training run (`{run}`) | n/a | n/a |")
      commands += [f"# {name}", *evaluation] if evaluation else []
      continue
    chain = stages(run, runs)
    done = [trained(stage) for stage in chain]
    parts = ", ".join(f"`{os.path.basename(os.path.normpath(s))}` {d['epoch']} of {d['epochs']}"
                      for s, d in zip(chain, done))
    machines = sorted({m for d in done for m in d["machines"]})
    lines.append(f"| {name} | {parts} | {_hours([d['wall_h'] for d in done])} | "
                 f"{'; '.join(machines) or 'n/a'} |")
    commands += [f"# {name}", *stage_commands(run, runs), *evaluation]
  if commands:
    lines += ["", "```", *commands, "```"]
  return lines + [""]
