"""--mode=eval: the paper's table for one model, stronger attacks and gradient-masking checks.

`run_eval` evaluates `--model_dir` (a training run, an original TF1 checkpoint or a SavedModel,
`anp.runs.loading`) on the test set and writes `eval.json` (fractions) and `eval.md`, the row
of the original README's tables (`anp.evaluation.tables`; printed in percent), into
`--eval_dir` (default: the model directory), each whole or not at all, and each example's
verdicts (`anp.evaluation.paired.EXAMPLES_FILE`). An interrupted
evaluation goes on from its last finished batch when run again (`anp.evaluation.resume`):

* White box: `--attack` (`anp.evaluation.attack_specs`) on the model; several attacks give the
  per-example worst case (strongest: pgd, apgd-ce, apgd-dlr, cw and square; autoattack: its
  cascade, with the accuracy after each stage). Each batch's attacks and evaluation run in one
  tf.function (`make_eval_step`).
* Black box: PGD examples crafted on `--source_model_dir` (same data set and input space) and
  transferred; "n/a" without a source.
* Vulnerability (Madaan et al. 2020, Eq. 2): mean |f(x) - f(x_adv)| over the units of each
  latent feature map, averaged over examples and layers; eval.json also keeps it per layer
  and per unit of the last latent layer. Memory, Flops and Sparsity: `anp.deploy.efficiency`.
* A model whose inference is random needs EOT gradients: where a gradient attack runs on
  single samples (`--eot_samples=1`; AutoAttack-rand runs 20 unless told more, Square needs
  no gradient) the evaluation warns, in the printout and in eval.json. An Adv-BNN run
  (--method=at_bnn) predicts with the mean softmax of --bnn_ensemble weight samples
  (`anp.methods.bnn.BnnEnsemble`) and is attacked with its method's EOT samples
  (`anp.methods.bnn.BNN_EOT_SAMPLES`) unless --eot_samples is given.
  `--sanity_checks`: the gradient-masking checks of Carlini et al. (2019) on a subset
  (`anp.evaluation.sanity`).
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from anp import data, methods
from anp.training import distribute
from anp.deploy import efficiency
from anp.atomic import savez_whole, write_whole
from anp.evaluation.attack_specs import AttackSpec, attack_specs, clip_range, make_attack
from anp.config import architecture, run_config_path
from anp.errors import UserError
from anp.evaluation.eval_net import evaluate_net
from anp.evaluation.paired import EXAMPLES_FILE
from anp.deploy.compact import connected_units
from anp.deploy.export import PRUNING_JSON
from anp.runs.loading import load_model
from anp.evaluation.sanity import SANITY_MAX_EXAMPLES, is_stochastic, sanity_checks
from anp.evaluation import resume
from anp.evaluation.sap import SapNet
from anp.evaluation.tables import (efficiency_columns, format_table, markdown_table,
                        table_cells, table_row)


# ----------------------------------------------------------------------------------------------
# --mode=eval.


def size_columns(net, kind, model_dir, arch, n_classes):
  """eval.json's size fields: units kept per site (`n_active` of `n_units`), Sparsity, Memory
  and Flops, of the masked net or of a --mode=prune export (its pruning.json).

  Unstructured (HYDRA-layer) pruning removes weights, not units: its columns count the zeros
  (`weight_pruning`, `sparsity_of` 'weights'), and its units kept are those still connected,
  as the compact export serves them."""
  units, pruned = None, {}
  if getattr(net, "unit_counts", ()):
    units = net.n_active(), list(net.unit_counts)
  elif kind == "saved_model" and os.path.isfile(os.path.join(model_dir, PRUNING_JSON)):
    with open(os.path.join(model_dir, PRUNING_JSON)) as f:
      pruned = json.load(f)
    units = pruned["n_active"], pruned["n_units"]
  weights = efficiency.weight_efficiency(net) if kind == "run" else pruned.get("weight_pruning")
  if weights and kind == "run" and units:
    units = connected_units(getattr(net, "net", net)), units[1]
  out = dict(n_active=None, n_units=None, sparsity=None, memory_pct=None, flops_ratio=None)
  if units:
    n_active, n_units = units
    out.update(n_active=n_active, n_units=n_units, sparsity=1.0 - sum(n_active) / sum(n_units),
               **efficiency_columns(arch, n_active, n_units, n_classes))
  if weights:
    out.update({k: weights[k] for k in ("sparsity", "memory_pct", "flops_ratio")},
               weight_pruning=weights)
  out["sparsity_of"] = "weights" if weights else "units"
  out["sparsity_pct"] = None if out["sparsity"] is None else 100 * out["sparsity"]
  return out


def output_dir(model_dir):
  """Where eval.json goes: the model directory, or the folder of a checkpoint prefix."""
  return model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir) or "."


def _warn(result, message):
  result.setdefault("warnings", []).append(message)
  banner = "!" * 78
  for stream in (sys.stdout, sys.stderr):
    print(f"{banner}\nWARNING: {message}\n{banner}", file=stream, flush=True)


def run_eval(cfg, arrays=None, verbose=True, command=None):
  """Evaluates --model_dir; writes <model_dir>/eval.json and eval.md and returns the dict.
  `command`: the command line that asked for it, kept in eval.json."""
  strategy = distribute.setup(cfg)  # first: multi-worker collectives start with the program
  with distribute.settings(cfg):  # --mixed_precision, --deterministic_ops: this run only
    return _run_eval(cfg, arrays, verbose, strategy, command)


def _run_eval(cfg, arrays, verbose, strategy, command):
  net, run_cfg, kind = load_model(cfg.model_dir, cfg)
  method = methods.get(run_cfg.method)
  cfg = dataclasses.replace(cfg, **method.evaluation_defaults(cfg))
  net, bnn = method.inference_net(net, cfg, kind)  # e.g. Adv-BNN's ensemble
  if cfg.defense == "sap":
    if kind == "saved_model":
      raise UserError("Flag --defense=sap: needs a training run or an original checkpoint "
                      "(its activations), not a SavedModel.")
    net = SapNet(net, cfg.sap_frac, differentiable=cfg.sap_gradient == "full")
  # The attack settings come from the flags, the data set and input space from the model.
  cfg = dataclasses.replace(cfg, dataset=run_cfg.dataset,
                            preprocess=run_cfg.preprocess).resolved()
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  info = data.dataset_info(cfg.dataset)
  _, _, x_te, y_te = arrays or data.load_arrays(cfg.dataset, cfg.data_dir, test_only=True)
  n = min(cfg.eval_examples or len(x_te), len(x_te))
  test_ds = data.make_dataset(x_te[:n], y_te[:n], cfg.eval_batch, training=False,
                              preprocess=cfg.preprocess)
  clip = clip_range(cfg.preprocess)
  specs = attack_specs(cfg, clip)

  source = None
  if cfg.source_model_dir:  # fail early on a bad source
    source, src_cfg, src_kind = load_model(cfg.source_model_dir, cfg, "--source_model_dir")
    source, _ = methods.get(src_cfg.method).inference_net(source, cfg, src_kind)
    if (src_cfg.dataset, src_cfg.preprocess) != (cfg.dataset, cfg.preprocess):
      raise UserError(f"Flag --source_model_dir: {cfg.source_model_dir!r} is a "
                      f"{src_cfg.dataset}/{src_cfg.preprocess} model, the evaluated one "
                      f"{cfg.dataset}/{cfg.preprocess}; a transfer attack needs the same "
                      "data set and input space.")

  known = kind != "saved_model" or os.path.isfile(run_config_path(cfg.model_dir))
  # The defence of the flags, or the one a SavedModel was exported with (--defense=sap).
  defense = cfg.defense if cfg.defense != "none" or not known else run_cfg.defense
  frac = cfg.sap_frac if cfg.defense != "none" or not known else run_cfg.sap_frac
  sap_gradient = cfg.sap_gradient if cfg.defense != "none" or not known else \
      run_cfg.sap_gradient
  result = dict(model_dir=cfg.model_dir, model_kind=kind, dataset=cfg.dataset,
                method=run_cfg.method if known else None,
                init_from=run_cfg.init_from if known else None, preprocess=cfg.preprocess,
                hydra=method.row_settings(run_cfg) if known else None,
                defense=None if defense == "none" else dict(name=defense, frac=frac,
                                                            gradient=sap_gradient),
                architecture=architecture(cfg.dataset), bnn=bnn, warnings=[])
  x0, _ = next(iter(test_ds))
  stochastic = is_stochastic(net, x0)
  result["stochastic"] = stochastic
  single = [name for name, spec in specs.items()
            if name != "square" and spec.as_dict()["eot_samples"] == 1]
  if stochastic and single:
    _warn(result, "the model's inference is random (two calls on the same batch differ) "
          f"and {', '.join(single)} ran on single-sample gradients, so the attack is weaker "
          "than it should be and the robust accuracy is overestimated. Re-run with "
          "--eot_samples=10 or more (expectation over transformation), or "
          "--attack=autoattack-rand.")
  elif not stochastic and cfg.eot_samples > 1 and verbose:
    print(f"Note: the model's inference is deterministic; --eot_samples={cfg.eot_samples} "
          "only repeats identical gradients.", flush=True)

  out_dir = cfg.eval_dir or output_dir(cfg.model_dir)
  # Finished batches survive an interruption (not across the workers of multi_worker).
  stores = resume.stores(out_dir, resume.evaluation_key(cfg, x_te[:n], y_te[:n]),
                         enabled=cfg.strategy != "multi_worker")

  # White box.
  if verbose:
    print(f"White box: {', '.join(specs)} on {n} examples.", flush=True)
  wb = evaluate_net(net, test_ds, {name: make_attack(spec) for name, spec in specs.items()}, n,
                    verbose=verbose, compact=cfg.compact_attack, strategy=strategy,
                    store=stores["whitebox"])
  first = next(iter(specs.values())).as_dict()
  result.update(
      clean_acc=wb["clean_acc"], adv_acc=wb["adv_acc"], vulnerability=wb["vulnerability"],
      vulnerability_attack=next(iter(specs)),
      layer_vulnerability=wb["layer_vulnerability"], per_attack=wb["per_attack"],
      unit_vulnerability=None if wb["unit_vulnerability"] is None else dict(
          layer=len(wb["layer_vulnerability"]) - 1, values=wb["unit_vulnerability"]),
      examples=wb["examples"], max_linf=wb["max_linf"],
      attack=dict(first, name=cfg.attack, attacks=list(specs),
                  compact_attack=cfg.compact_attack, eval_batch=cfg.eval_batch,
                  specs={name: spec.as_dict() for name, spec in specs.items()}))

  # Black box.
  result["blackbox"] = None
  if cfg.source_model_dir:
    bb_spec = AttackSpec("pgd", eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                         clip_min=clip[0], clip_max=clip[1],
                         eot_samples=cfg.eot_samples if is_stochastic(source, x0) else 1)
    if verbose:
      print(f"Black box: PGD-{cfg.attack_steps} examples of {cfg.source_model_dir} "
            "transferred.", flush=True)
    bb = evaluate_net(net, test_ds, {"pgd": make_attack(bb_spec)}, n, source=source,
                      verbose=verbose, label="bb_acc", compact=cfg.compact_attack,
                      strategy=strategy, store=stores["blackbox"])
    result["blackbox"] = dict(
        adv_acc=bb["adv_acc"], vulnerability=bb["vulnerability"],
        layer_vulnerability=bb["layer_vulnerability"], source_model_dir=cfg.source_model_dir,
        source_method=src_cfg.method, attack=bb_spec.as_dict())
  outcomes = dict(wb["outcomes"], attacks=np.array(list(wb["per_attack"])))
  if cfg.source_model_dir:
    outcomes["blackbox"] = bb["outcomes"]["robust"]
  resumed = {"whitebox": wb["resumed_examples"],
             "blackbox": bb["resumed_examples"] if cfg.source_model_dir else 0}
  if any(resumed.values()):  # examples of each phase read from an interrupted run
    result["resumed_examples"] = resumed

  result.update(method.size_columns(
      size_columns(net, kind, cfg.model_dir, result["architecture"], info.n_classes), bnn))

  # Sanity checks.
  result["sanity"] = None
  if cfg.sanity_checks:
    m = min(n, SANITY_MAX_EXAMPLES)
    xs, ys = [], []
    for x, y in test_ds:
      xs.append(x), ys.append(y)
      if sum(len(b) for b in xs) >= m:
        break
    xs, ys = tf.concat(xs, 0)[:m], tf.concat(ys, 0)[:m]
    if verbose:
      print(f"Sanity checks (Carlini et al. 2019) on {m} examples.", flush=True)
    pgd_spec = specs.get("pgd") or next(iter(specs.values())).replace(name="pgd")
    sanity = sanity_checks(
        net, xs, ys, pgd_spec, verbose=verbose,
        whitebox_acc=result["adv_acc"] if result["blackbox"] else None,
        blackbox_acc=result["blackbox"]["adv_acc"] if result["blackbox"] else None,
        per_attack=result["per_attack"], compact=cfg.compact_attack)
    result["sanity"] = sanity
    if sanity["possible_gradient_masking"]:
      _warn(result, "possible gradient masking: sanity checks failed: "
            + ", ".join(sanity["failed"]) + " (see 'sanity' in eval.json).")

  result["table_row"] = table_row(result)
  if command:
    result["command"] = command
  if distribute.replicas(strategy) > 1:
    result["replicas"] = distribute.replicas(strategy)
  if distribute.is_chief(strategy):  # every worker computed the same result
    os.makedirs(out_dir, exist_ok=True)
    write_whole(os.path.join(out_dir, "eval.json"), json.dumps(result, indent=2))
    write_whole(os.path.join(out_dir, "eval.md"), markdown_table([table_cells(result)], [result]))
    savez_whole(os.path.join(out_dir, EXAMPLES_FILE), outcomes, compressed=True)
    resume.remove(out_dir)
  print(format_table(result))
  print(markdown_table([table_cells(result)], [result]), end="")
  return result
