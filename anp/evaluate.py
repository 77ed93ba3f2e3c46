"""--mode=eval: the paper's table for one model, stronger attacks and gradient-masking checks.

`run_eval` evaluates `--model_dir` (a training run, an original TF1 checkpoint or a SavedModel,
`anp.loading`) on the test set and writes `<model_dir>/eval.json` (fractions) and `eval.md`, the
row of the original README's tables (`anp.tables`; printed in percent):

* White box: `--attack` (`anp.attack_specs`) on the model; strongest is the per-example worst
  case over pgd, apgd-ce, apgd-dlr and cw. Each batch's attacks and evaluation run in one
  tf.function (`make_eval_step`).
* Black box: PGD examples crafted on `--source_model_dir` (same data set and input space) and
  transferred; "n/a" without a source.
* Vulnerability (Madaan et al. 2020, Eq. 2): mean |f(x) - f(x_adv)| over the units of each
  latent feature map, averaged over examples and layers; eval.json also keeps it per layer
  and per unit of the last latent layer. Memory, Flops and Sparsity: `anp.efficiency`.
* A model whose inference is random needs `--eot_samples` > 1; with 1 the evaluation warns,
  in the printout and in eval.json. An Adv-BNN run (--method=at_bnn) predicts with the mean
  softmax of --bnn_ensemble weight samples (`anp.bnn.BnnEnsemble`) and is attacked with
  BNN_EOT_SAMPLES EOT samples unless --eot_samples is given. `--sanity_checks`: the
  gradient-masking checks of Carlini et al. (2019) on a subset (`anp.sanity`).
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from anp import data, distribute, hydra
from anp.attack_specs import EVAL_BATCH, AttackSpec, attack_specs, clip_range, make_attack
from anp.bnn import BnnEnsemble, parameter_counts
from anp.config import BNN_EOT_SAMPLES, run_config_path
from anp.errors import UserError
from anp.export import PRUNING_JSON
from anp.loading import load_model
from anp.progress import Progress
from anp.runs import architecture
from anp.sanity import SANITY_MAX_EXAMPLES, is_stochastic, sanity_checks
from anp.sap import SapNet
from anp.tables import (efficiency_columns, format_table, hydra_settings, markdown_table,
                        table_cells, table_row)
from attacks.common import per_example, predictions_correct


# ----------------------------------------------------------------------------------------------
# Evaluating a network over a data set.


def _example_mean_abs(a, b):
  """Per example mean |a - b| over all units: [B]."""
  d = tf.abs(a - b)
  return tf.reduce_mean(tf.reshape(d, [tf.shape(d)[0], -1]), axis=1)


def _unit_abs_sum(a, b):
  """Per unit (last axis) |a - b|, averaged over positions and summed over examples."""
  d = tf.abs(a - b)
  if d.shape.rank > 2:
    d = tf.reduce_mean(d, axis=list(range(1, d.shape.rank - 1)))
  return tf.reduce_sum(d, axis=0)


def _features_of(net):
  """(logits, [features]) of `net` in inference mode; [] when it exposes no features."""
  def call(x):
    out = net(x, training=False, return_features=True)
    if isinstance(out, (tuple, list)) and len(out) == 2:
      return out[0], list(out[1])
    return out, []
  return call


def make_eval_step(net, named_attacks, source=None, feature_layer=-1, compact=False):
  """One compiled step: attack(s) + evaluation of a batch.

  `named_attacks`: [(name, attack_fn)]. Gradients come from `source` (black box) or `net`;
  with `compact`, from its `attack_fn()` (pruned units removed; same logits up to rounding)
  where it has one. Predictions and features always come from `net` itself.
  With several attacks an example is adversarial as soon as one attack fools `net`; its
  adversarial example (for the vulnerability) is the first attack's that succeeds, else
  the first attack's. Returns a tf.function (x, y) -> dict of per-example correctness and
  summed vulnerabilities.
  """
  feats_fn = _features_of(net)
  crafter = net if source is None else source

  def craft_fn():
    if compact and hasattr(crafter, "attack_fn"):
      return crafter.attack_fn()
    return lambda t: crafter(t, training=False)

  @tf.function(reduce_retracing=True)
  def step(x, y):
    logits, feats = feats_fn(x)
    craft = craft_fn()
    out = {"clean": predictions_correct(logits, y)}
    chosen = chosen_feats = robust = None
    per_attack = []
    for _, attack in named_attacks:
      x_adv = tf.stop_gradient(attack(craft, x, y))
      logits_adv, feats_adv = feats_fn(x_adv)
      ok = predictions_correct(logits_adv, y)
      per_attack.append(ok)
      if chosen is None:
        chosen, chosen_feats, robust = x_adv, feats_adv, ok
      else:
        take = tf.logical_and(robust, tf.logical_not(ok))
        pick = lambda new, old: tf.where(per_example(take, new), new, old)  # noqa: E731
        chosen = pick(x_adv, chosen)
        chosen_feats = [pick(n, o) for n, o in zip(feats_adv, chosen_feats)]
        robust = tf.logical_and(robust, ok)
    out["adv"] = robust
    out["per_attack"] = tf.stack(per_attack)
    out["linf"] = tf.reduce_max(tf.reshape(tf.abs(chosen - x), [tf.shape(x)[0], -1]), axis=1)
    if feats:
      out["layer_vul"] = tf.stack([tf.reduce_sum(_example_mean_abs(c, a))
                                   for c, a in zip(feats, chosen_feats)])
      out["unit_vul"] = _unit_abs_sum(feats[feature_layer], chosen_feats[feature_layer])
    return out

  return step


# Batch axis of each per-example output of an eval step; None: a sum over examples.
STEP_AXES = dict(clean=0, adv=0, per_attack=1, linf=0, layer_vul=None, unit_vul=None)


def run_steps(step, dataset, n_examples=None, names=("adv",), verbose=True, label=None):
  """Runs `step` over a dataset and aggregates: fractions and mean vulnerabilities."""
  per, linf, layer_vul, unit_vul, total = [], [], 0.0, 0.0, 0
  adv_label = label or "adv_acc"
  bar = Progress(n_examples, "evaluated", unit="example", interval=15.0, enabled=verbose)
  n_clean = n_adv = 0
  for x, y in dataset:
    out = step(x, y)
    c, a = out["clean"].numpy(), out["adv"].numpy()
    per.append(out["per_attack"].numpy())
    linf.append(out["linf"].numpy())
    if "layer_vul" in out:
      layer_vul = layer_vul + out["layer_vul"].numpy().astype(np.float64)
      unit_vul = unit_vul + out["unit_vul"].numpy().astype(np.float64)
    total, n_clean, n_adv = total + len(c), n_clean + int(c.sum()), n_adv + int(a.sum())
    bar.update(total, {"clean_acc": n_clean / total, adv_label: n_adv / total})
  bar.close()
  if total == 0:
    raise UserError("No test examples to evaluate (check --eval_examples and the data).")
  per = np.concatenate(per, axis=1)
  result = dict(clean_acc=n_clean / total, adv_acc=n_adv / total, examples=int(total),
                per_attack={name: float(p.mean()) for name, p in zip(names, per)},
                max_linf=float(np.max(np.concatenate(linf))))
  if np.ndim(layer_vul):
    layer_vul = layer_vul / total
    result.update(vulnerability=float(layer_vul.mean()),
                  layer_vulnerability=[float(v) for v in layer_vul],
                  unit_vulnerability=[float(v) for v in unit_vul / total])
  else:
    result.update(vulnerability=None, layer_vulnerability=None, unit_vulnerability=None)
  return result


def evaluate_net(net, dataset, attack, n_examples=None, *, source=None, feature_layer=-1,
                 verbose=True, label=None, compact=False, strategy=None):
  """Clean/adversarial accuracy and vulnerability of `net` over a dataset.

  `attack`: `attack(model_fn, x, y) -> x_adv`, or a dict {name: attack} for the per-example
  worst case. With `source`, examples are crafted on `source` and transferred (black box);
  `compact`: see `make_eval_step`. With a tf.distribute `strategy` each batch is split over
  its replicas and their per-example results gathered in order (`anp.distribute`).
  Returns a dict of fractions in [0, 1]: clean_acc, adv_acc, vulnerability (mean |f(x) -
  f(x_adv)| over units and examples, averaged over layers), layer_vulnerability,
  unit_vulnerability (per unit of feature layer `feature_layer`), per_attack, examples.
  """
  named = list(attack.items()) if isinstance(attack, dict) else \
      [(getattr(attack, "__name__", "attack"), attack)]
  step = make_eval_step(net, named, source=source, feature_layer=feature_layer,
                        compact=compact)
  step = distribute.per_example_step(strategy, step, STEP_AXES)
  return run_steps(step, dataset, n_examples, names=[n for n, _ in named], verbose=verbose,
                   label=label)


# ----------------------------------------------------------------------------------------------
# --mode=eval.


def output_dir(model_dir):
  """Where eval.json goes: the model directory, or the folder of a checkpoint prefix."""
  return model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir) or "."


def _warn(result, message):
  result.setdefault("warnings", []).append(message)
  banner = "!" * 78
  for stream in (sys.stdout, sys.stderr):
    print(f"{banner}\nWARNING: {message}\n{banner}", file=stream, flush=True)


def run_eval(cfg, arrays=None, verbose=True):
  """Evaluates --model_dir; writes <model_dir>/eval.json and eval.md and returns the dict."""
  strategy = distribute.setup(cfg)  # first: multi-worker collectives start with the program
  net, run_cfg, kind = load_model(cfg.model_dir, cfg)
  bnn = None
  if run_cfg.method == "at_bnn":  # stochastic by design: EOT unless told otherwise
    if cfg.eot_samples is None:
      cfg = dataclasses.replace(cfg, eot_samples=BNN_EOT_SAMPLES)
    if kind != "saved_model":  # an export holds its own ensemble (`anp.export`)
      bnn = dict(ensemble=cfg.bnn_ensemble, parameters=parameter_counts(net))
      net = BnnEnsemble(net, cfg.bnn_ensemble)
  if cfg.defense == "sap":
    if kind == "saved_model":
      raise UserError("Flag --defense=sap: needs a training run or an original checkpoint "
                      "(its activations), not a SavedModel.")
    net = SapNet(net, cfg.sap_frac)
  # The attack settings come from the flags, the data set and input space from the model.
  cfg = dataclasses.replace(cfg, dataset=run_cfg.dataset,
                            preprocess=run_cfg.preprocess).resolved()
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  info = data.dataset_info(cfg.dataset)
  _, _, x_te, y_te = arrays or data.load_arrays(cfg.dataset, cfg.data_dir, test_only=True)
  n = min(cfg.eval_examples or len(x_te), len(x_te))
  test_ds = data.make_dataset(x_te[:n], y_te[:n], EVAL_BATCH, training=False,
                              preprocess=cfg.preprocess)
  clip = clip_range(cfg.preprocess)
  specs = attack_specs(cfg, clip)

  source = None
  if cfg.source_model_dir:  # fail early on a bad source
    source, src_cfg, src_kind = load_model(cfg.source_model_dir, cfg, "--source_model_dir")
    if src_cfg.method == "at_bnn" and src_kind != "saved_model":
      source = BnnEnsemble(source, cfg.bnn_ensemble)
    if (src_cfg.dataset, src_cfg.preprocess) != (cfg.dataset, cfg.preprocess):
      raise UserError(f"Flag --source_model_dir: {cfg.source_model_dir!r} is a "
                      f"{src_cfg.dataset}/{src_cfg.preprocess} model, the evaluated one "
                      f"{cfg.dataset}/{cfg.preprocess}; a transfer attack needs the same "
                      "data set and input space.")

  known = kind != "saved_model" or os.path.isfile(run_config_path(cfg.model_dir))
  result = dict(model_dir=cfg.model_dir, model_kind=kind, dataset=cfg.dataset,
                method=run_cfg.method if known else None,
                init_from=run_cfg.init_from if known else None, preprocess=cfg.preprocess,
                hydra=hydra_settings(run_cfg) if known else None,
                defense=None if cfg.defense == "none" else dict(name=cfg.defense,
                                                                 frac=cfg.sap_frac),
                architecture=architecture(cfg.dataset), bnn=bnn, warnings=[])
  x0, _ = next(iter(test_ds))
  stochastic = is_stochastic(net, x0)
  result["stochastic"] = stochastic
  if stochastic and cfg.eot_samples == 1:
    _warn(result, "the model's inference is random (two calls on the same batch differ) "
          "and --eot_samples=1: gradients are single samples, so the attack is weaker "
          "than it should be and the robust accuracy is overestimated. Re-run with "
          "--eot_samples=10 or more (expectation over transformation).")
  elif not stochastic and cfg.eot_samples > 1 and verbose:
    print(f"Note: the model's inference is deterministic; --eot_samples={cfg.eot_samples} "
          "only repeats identical gradients.", flush=True)

  # White box.
  if verbose:
    print(f"White box: {', '.join(specs)} on {n} examples.", flush=True)
  wb = evaluate_net(net, test_ds, {name: make_attack(spec) for name, spec in specs.items()}, n,
                    verbose=verbose, compact=cfg.compact_attack, strategy=strategy)
  first = next(iter(specs.values())).as_dict()
  result.update(
      clean_acc=wb["clean_acc"], adv_acc=wb["adv_acc"], vulnerability=wb["vulnerability"],
      layer_vulnerability=wb["layer_vulnerability"], per_attack=wb["per_attack"],
      unit_vulnerability=None if wb["unit_vulnerability"] is None else dict(
          layer=len(wb["layer_vulnerability"]) - 1, values=wb["unit_vulnerability"]),
      examples=wb["examples"], max_linf=wb["max_linf"],
      attack=dict(first, name=cfg.attack, attacks=list(specs),
                  compact_attack=cfg.compact_attack))

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
                      strategy=strategy)
    result["blackbox"] = dict(
        adv_acc=bb["adv_acc"], vulnerability=bb["vulnerability"],
        layer_vulnerability=bb["layer_vulnerability"], source_model_dir=cfg.source_model_dir,
        source_method=src_cfg.method, attack=bb_spec.as_dict())

  # Size: of the masked net, or of a --mode=prune export from its pruning.json.
  units, pruned = None, {}
  if getattr(net, "unit_counts", ()):
    units = net.n_active(), list(net.unit_counts)
  elif kind == "saved_model" and os.path.isfile(os.path.join(cfg.model_dir, PRUNING_JSON)):
    with open(os.path.join(cfg.model_dir, PRUNING_JSON)) as f:
      pruned = json.load(f)
    units = pruned["n_active"], pruned["n_units"]
  if units:
    n_active, n_units = units
    result.update(n_active=n_active, n_units=n_units,
                  sparsity=1.0 - sum(n_active) / sum(n_units),
                  **efficiency_columns(result["architecture"], n_active, n_units,
                                       info.n_classes))
  else:
    result.update(n_active=None, n_units=None, sparsity=None, memory_pct=None,
                  flops_ratio=None)
  # HYDRA's unstructured pruning removes weights, not units: its columns count the zeros.
  weights = hydra.weight_efficiency(net) if kind == "run" else pruned.get("weight_pruning")
  if weights:
    result.update({k: weights[k] for k in ("sparsity", "memory_pct", "flops_ratio")},
                  weight_pruning=weights)
  result["sparsity_of"] = "weights" if weights else "units"
  result["sparsity_pct"] = None if result["sparsity"] is None else 100 * result["sparsity"]

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
        blackbox_acc=result["blackbox"]["adv_acc"] if result["blackbox"] else None)
    result["sanity"] = sanity
    if sanity["possible_gradient_masking"]:
      _warn(result, "possible gradient masking: sanity checks failed: "
            + ", ".join(sanity["failed"]) + " (see 'sanity' in eval.json).")

  result["table_row"] = table_row(result)
  if distribute.replicas(strategy) > 1:
    result["replicas"] = distribute.replicas(strategy)
  out_dir = output_dir(cfg.model_dir)
  if distribute.is_chief(strategy):  # every worker computed the same result
    with open(os.path.join(out_dir, "eval.json"), "w") as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, "eval.md"), "w") as f:
      f.write(markdown_table([table_cells(result)]))
  print(format_table(result))
  print(markdown_table([table_cells(result)]), end="")
  return result
