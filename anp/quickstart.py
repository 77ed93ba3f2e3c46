"""--mode=quickstart: the whole pipeline on MNIST in one command (4-5 minutes on 2 cores).

standard base (1 epoch) -> ANP-VS from it (1 epoch) -> eval of both (PGD-40, 1000 test images;
the base is ANP-VS's black-box source) -> prune/export of the ANP-VS model -> report. Every
step writes into its own folder under the root (`--model_dir`, default runs/quickstart);
re-running resumes or skips finished training, like any run directory.
"""

import os

from anp.config import Config

DEFAULT_ROOT = os.path.join("runs", "quickstart")


def run_quickstart(cfg):
  """Runs the steps above; `cfg` gives data_dir, seed, and optionally a shorter schedule
  (steps_per_epoch, eval_examples, train_attack_steps, attack_steps). Returns the report dict."""
  from anp.evaluation.evaluate import run_eval
  from anp.deploy.export import run_export
  from anp.evaluation.report import run_report
  from anp.training.train import run_train
  root = DEFAULT_ROOT if cfg.model_dir == Config.model_dir else cfg.model_dir
  dirs = {k: os.path.join(root, k) for k in ("standard", "anp_vs", "export", "report")}
  common = dict(dataset="mnist", data_dir=cfg.data_dir, seed=cfg.seed,
                steps_per_epoch=cfg.steps_per_epoch, val_examples=cfg.val_examples or 500)
  if cfg.train_attack_steps:
    common["train_attack_steps"] = cfg.train_attack_steps
  say = lambda text: print(f"\n== {text}", flush=True)  # noqa: E731
  say(f"1/5 standard base, 1 epoch -> {dirs['standard']}")
  run_train(Config(mode="train", method="standard", epochs=1, model_dir=dirs["standard"],
                   **common))
  say(f"2/5 ANP-VS from the base, 1 epoch -> {dirs['anp_vs']}")
  run_train(Config(mode="train", method="anp_vs", epochs=1, model_dir=dirs["anp_vs"],
                   init_from=dirs["standard"], **common))
  evals = dict(mode="eval", data_dir=cfg.data_dir, seed=cfg.seed, attack_steps=cfg.attack_steps,
               eval_examples=cfg.eval_examples or 1000)
  for name, source in (("standard", None), ("anp_vs", dirs["standard"])):
    say(f"3/5 eval of {name}: PGD-{cfg.attack_steps} on {evals['eval_examples']} test images "
        f"-> {dirs[name]}/eval.json")
    run_eval(Config(model_dir=dirs[name], source_model_dir=source, **evals))
  say(f"4/5 prune ANP-VS to a compact SavedModel -> {dirs['export']}")
  run_export(Config(mode="prune", model_dir=dirs["anp_vs"], export_dir=dirs["export"],
                    data_dir=cfg.data_dir))
  say(f"5/5 report -> {dirs['report']}/report.md")
  return run_report(Config(mode="report", runs=f"{dirs['standard']},{dirs['anp_vs']}",
                           report_dir=dirs["report"]))
