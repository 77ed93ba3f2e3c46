"""Evaluating a network over a data set: every attack of a batch and its evaluation in one
compiled step (`make_eval_step`), aggregated over the batches (`run_steps`, `evaluate_net`).

Per example: clean and adversarial correctness (the worst case over several attacks), the
largest L-inf distance of any attack's example; summed over examples: the vulnerability
(Madaan et al. 2020, Eq. 2: mean |f(x) - f(x_adv)| over the units of each latent feature map)
of the first attack's examples (PGD-40 in the paper's table), per layer and per unit of one
layer. `anp.evaluation.evaluate` builds the paper's table from it.
"""

import sys

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # op determinism's state

from anp.training import distribute
from anp.errors import UserError
from anp.training.progress import Progress
from attacks.common import predictions_correct

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


def make_eval_step(net, named_attacks, source=None, feature_layer=-1, compact=False,
                   log_attacks=False):
  """One compiled step: attack(s) + evaluation of a batch.

  `named_attacks`: [(name, attack_fn)]. Gradients come from `source` (black box) or `net`;
  with `compact`, from its `attack_fn()` (pruned units removed; same logits up to rounding)
  where it has one. Predictions and features always come from `net` itself.
  An attack with `with_stages` (AutoAttack) also gives, per stage `s` of `attack.stages`,
  whether an example survives the cascade up to it (`per_attack` row `<name>/<s>`, just
  before the attack's own row), each stage's successes decided by one prediction of `net`
  right after it; the last stage's decision is the attack's (for a random net, as the
  reference: a fresh prediction at the end could differ).
  With several attacks an example is adversarial as soon as one attack fools `net`. The
  vulnerability is always that of the first attack's examples, so that its column keeps one
  meaning whatever attacks follow (the paper's: PGD-40's). Returns a tf.function (x, y) ->
  dict of per-example correctness and summed vulnerabilities. With `log_attacks`, a line per
  attack as it finishes (its name, the batch's examples it left robust, the seconds since the
  step began): the progress of a long evaluation of one batch.
  """
  feats_fn = _features_of(net)
  crafter = net if source is None else source

  def judge(t):
    return net(t, training=False)

  def craft_fn():
    if compact and hasattr(crafter, "attack_fn"):
      return crafter.attack_fn()
    return lambda t: crafter(t, training=False)

  @tf.function(reduce_retracing=True)
  def step(x, y):
    logits, feats = feats_fn(x)
    craft = craft_fn()
    out = {"clean": predictions_correct(logits, y)}
    first_adv = first_feats = robust = linf = None
    per_attack = []
    # tf.timestamp is refused under --deterministic_ops: the lines then give no seconds.
    timed = log_attacks and not tf_config.is_op_determinism_enabled()
    start = tf.timestamp() if timed else None
    for name, attack in named_attacks:
      if hasattr(attack, "with_stages"):  # a cascade, judged by `net` after each stage
        x_adv, stages = attack.with_stages(craft, x, y, judge_fn=judge)
        per_attack.extend(tf.unstack(stages))
      else:
        x_adv, stages = attack(craft, x, y), None
      x_adv = tf.stop_gradient(x_adv)
      logits_adv, feats_adv = feats_fn(x_adv)
      # A cascade's own verdict stands: of a random net, a new prediction could differ.
      ok = predictions_correct(logits_adv, y) if stages is None else stages[-1]
      per_attack.append(ok)
      if log_attacks:
        with tf.control_dependencies([ok]):  # read the clock once the attack is done
          seconds = ["after", tf.round(tf.timestamp() - start), "s"] if timed else []
        tf.print("  attack", name, "done:", tf.reduce_sum(tf.cast(ok, tf.int32)), "of",
                 tf.size(ok), "examples robust", *seconds, output_stream=sys.stdout)
      dist = tf.reduce_max(tf.reshape(tf.abs(x_adv - x), [tf.shape(x)[0], -1]), axis=1)
      if first_adv is None:
        first_adv, first_feats, robust, linf = x_adv, feats_adv, ok, dist
      else:
        robust, linf = tf.logical_and(robust, ok), tf.maximum(linf, dist)
    out["adv"] = robust
    out["per_attack"] = tf.stack(per_attack)
    out["linf"] = linf
    if feats:
      out["layer_vul"] = tf.stack([tf.reduce_sum(_example_mean_abs(c, a))
                                   for c, a in zip(feats, first_feats)])
      out["unit_vul"] = _unit_abs_sum(feats[feature_layer], first_feats[feature_layer])
    return out

  return step


# Batch axis of each per-example output of an eval step; None: a sum over examples.
STEP_AXES = dict(clean=0, adv=0, per_attack=1, linf=0, layer_vul=None, unit_vul=None)


def run_steps(step, dataset, n_examples=None, names=("adv",), verbose=True, label=None,
              store=None):
  """Runs `step` over a dataset and aggregates: fractions and mean vulnerabilities.

  With a `store` (`anp.evaluation.resume.BatchStore`) each batch's outputs are kept as it
  finishes, and the batches it already holds are read instead of run; `resumed_examples` in
  the result counts their examples. `outcomes` holds the per-example verdicts in the order of
  the dataset (NumPy bool arrays): `clean` (correct on x), `robust` (the worst case) and
  `per_attack` (one row per name of `names`)."""
  outs = store.done() if store is not None else []
  resumed = total = sum(len(o["clean"]) for o in outs)
  n_clean, n_adv = (sum(int(o[k].sum()) for o in outs) for k in ("clean", "adv"))
  adv_label = label or "adv_acc"
  bar = Progress(n_examples, "evaluated", unit="example", first=total, interval=15.0,
                 enabled=verbose)
  batches = dataset.skip(len(outs)) if outs else dataset  # a store's: a tf.data.Dataset
  for index, (x, y) in enumerate(batches, start=len(outs)):
    out = {k: v.numpy() for k, v in step(x, y).items()}
    if store is not None:
      store.add(index, out)
    outs.append(out)
    c, a = out["clean"], out["adv"]
    total, n_clean, n_adv = total + len(c), n_clean + int(c.sum()), n_adv + int(a.sum())
    bar.update(total, {"clean_acc": n_clean / total, adv_label: n_adv / total})
  bar.close()
  if total == 0:
    raise UserError("No test examples to evaluate (check --eval_examples and the data).")
  def cat(key):  # one output of every batch, examples on the last axis
    return np.concatenate([o[key] for o in outs], axis=-1).astype(bool)
  per = cat("per_attack")
  result = dict(clean_acc=n_clean / total, adv_acc=n_adv / total, examples=int(total),
                outcomes=dict(clean=cat("clean"), robust=cat("adv"), per_attack=per),
                per_attack={name: float(p.mean()) for name, p in zip(names, per)},
                max_linf=float(np.max(np.concatenate([o["linf"] for o in outs]))),
                resumed_examples=resumed)
  if "layer_vul" in outs[0]:
    layer_vul, unit_vul = (sum(o[k].astype(np.float64) for o in outs) / total
                           for k in ("layer_vul", "unit_vul"))
    result.update(vulnerability=float(layer_vul.mean()),
                  layer_vulnerability=[float(v) for v in layer_vul],
                  unit_vulnerability=[float(v) for v in unit_vul])
  else:
    result.update(vulnerability=None, layer_vulnerability=None, unit_vulnerability=None)
  return result


def evaluate_net(net, dataset, attack, n_examples=None, *, source=None, feature_layer=-1,
                 verbose=True, label=None, compact=False, strategy=None, store=None):
  """Clean/adversarial accuracy and vulnerability of `net` over a dataset.

  `attack`: `attack(model_fn, x, y) -> x_adv`, or a dict {name: attack} for the per-example
  worst case. With `source`, examples are crafted on `source` and transferred (black box);
  `compact`: see `make_eval_step`. With a tf.distribute `strategy` each batch is split over
  its replicas and their per-example results gathered in order (`anp.training.distribute`).
  Returns a dict of fractions in [0, 1]: clean_acc, adv_acc, vulnerability (mean |f(x) -
  f(x_adv)| over units and examples, averaged over layers), layer_vulnerability,
  unit_vulnerability (per unit of feature layer `feature_layer`), per_attack, examples,
  resumed_examples (those read from `store`, see `run_steps`).
  """
  named = list(attack.items()) if isinstance(attack, dict) else \
      [(getattr(attack, "__name__", "attack"), attack)]
  step = make_eval_step(net, named, source=source, feature_layer=feature_layer,
                        compact=compact, log_attacks=verbose and strategy is None)
  step = distribute.per_example_step(strategy, step, STEP_AXES)
  names = [row for n, a in named
           for row in [f"{n}/{s}" for s in getattr(a, "stages", ())] + [n]]
  return run_steps(step, dataset, n_examples, names=names, verbose=verbose, label=label,
                   store=store)
