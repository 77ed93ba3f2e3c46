"""--mode=eval: the paper's table for one model, stronger attacks and gradient-masking checks.

`run_eval` evaluates the model of `--model_dir` (a training run, an original TF1 checkpoint of
the authors' code, or a SavedModel) on the test set and writes `<model_dir>/eval.json` and
`<model_dir>/eval.md`, the row of the original README's tables:

  | Model | Clean Acc. | White Box Adversarial acc. | Black Box Adversarial acc. |
  | White Box Vulnerability | Black Box Vulnerability | Memory | Flops | Sparsity |

* White box: `--attack` on the model itself: pgd (default; L-inf PGD with a random start,
  `--attack_steps` steps of `--step_size` within `--eps`), fgsm, apgd-ce, apgd-dlr, cw (PGD
  on the Carlini-Wagner margin), or strongest: per example the worst case over pgd, apgd-ce,
  apgd-dlr and cw (an example counts as robust only when every attack fails; each attack's
  accuracy is reported too). `--restarts` keeps, per example, the worst of several random
  restarts. Each attack runs with the per-batch evaluation in one compiled tf.function.
* Black box: PGD examples crafted on `--source_model_dir` (another run: the same data set and
  input space), transferred to the model. "n/a" without a source.
* Vulnerability (Madaan et al. 2020, Eq. 2): mean |f(x) - f(x_adv)| over the units of each
  latent feature map, averaged over examples and over layers. eval.json also keeps it per
  layer and per unit of the last latent layer (the paper's vulnerability histograms).
* Memory (% of the full network), Flops (speed-up ratio) and Sparsity (% of units pruned):
  the original code's formulas (`anp.efficiency`).
* A model whose inference is random (two calls on the same batch differ) must be attacked
  with expectation over transformation (`--eot_samples` > 1); with `--eot_samples=1` the
  evaluation goes on but warns, in the printout and in eval.json.
* `--sanity_checks`: the checks of Carlini et al. (2019), "On Evaluating Adversarial
  Robustness", on a subset; violations are reported as possible gradient masking.

Accuracies, sparsity and vulnerabilities are fractions in eval.json; the tables print percent.
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import attacks
from anp import data, efficiency
from anp.config import Config, run_config_path
from anp.errors import UserError
from anp.export import PRUNING_JSON, load_saved_model
from anp.progress import Progress
from anp.runs import RunError, architecture, load_run
from attacks.common import per_example, predictions_correct
from attacks.losses import cw_margin

ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "cw")
STRONGEST = ("pgd", "apgd-ce", "apgd-dlr", "cw")
EVAL_BATCH = 256
SANITY_MAX_EXAMPLES = 1000

TABLE_COLUMNS = ("Model", "Clean Acc.", "White Box Adversarial acc.",
                 "Black Box Adversarial acc.", "White Box Vulnerability",
                 "Black Box Vulnerability", "Memory", "Flops", "Sparsity")
METHOD_NAMES = {"standard": "Standard", "at": "AT", "bp": "BP", "anp": "ANP",
                "anp_vs": "ANP-VS"}


# ----------------------------------------------------------------------------------------------
# Attacks.


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """One white-box attack and its budget. `steps` is ignored by fgsm."""

  name: str
  eps: float
  step_size: float
  steps: int
  restarts: int = 1
  eot_samples: int = 1
  rand_init: bool = True
  clip_min: float = 0.0
  clip_max: float = 1.0

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def as_dict(self):
    out = dataclasses.asdict(self)
    if self.name == "fgsm":
      out.update(steps=1, rand_init=False)
    return out


def make_attack(spec):
  """`attack(model_fn, x, y) -> x_adv` of an AttackSpec (traceable inside tf.function)."""
  if spec.name not in ATTACKS:
    raise UserError(f"Flag --attack={spec.name!r} is not accepted; expected one of "
                    f"{', '.join(ATTACKS + ('strongest',))}.")
  common = dict(clip_min=spec.clip_min, clip_max=spec.clip_max, eot_samples=spec.eot_samples)
  if spec.name in ("pgd", "cw"):
    fn, kw = attacks.pgd, dict(eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                               rand_init=spec.rand_init, loss="ce" if spec.name == "pgd"
                               else "cw", **common)
  elif spec.name == "fgsm":
    fn, kw = attacks.fgsm, dict(eps=spec.eps, **common)
  else:
    fn, kw = attacks.apgd, dict(eps=spec.eps, steps=spec.steps,
                                loss="ce" if spec.name == "apgd-ce" else "dlr", **common)

  if spec.restarts > 1 and spec.name != "fgsm":
    def attack(model_fn, x, y):
      return attacks.attack_with_restarts(fn, model_fn, x, y, spec.restarts, **kw)
  else:
    def attack(model_fn, x, y):
      return fn(model_fn, x, y, **kw)
  attack.__name__ = spec.name
  return attack


def attack_specs(cfg, clip=(0.0, 1.0)):
  """{name: AttackSpec} of the white-box attack(s) a resolved config asks for."""
  names = STRONGEST if cfg.attack == "strongest" else (cfg.attack,)
  return {name: AttackSpec(name, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                           restarts=cfg.restarts, eot_samples=cfg.eot_samples,
                           clip_min=clip[0], clip_max=clip[1]) for name in names}


def clip_range(preprocess):
  """The box adversarial examples are clipped to.

  [0, 1] pixels for 'pixel'. For 'original' the inputs are per-image standardized, and the
  original code still clips to [0, 1] in that space (np.clip(x_adv, 0, 1) in
  PGDAttack.perturb); we keep that so that its numbers can be reproduced.
  """
  del preprocess
  return 0.0, 1.0


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


def make_eval_step(net, named_attacks, source=None, feature_layer=-1):
  """One compiled step: attack(s) + evaluation of a batch.

  `named_attacks`: [(name, attack_fn)]. Gradients come from `source` (black box) or `net`.
  With several attacks an example is adversarial as soon as one attack fools `net`; its
  adversarial example (for the vulnerability) is the first attack's that succeeds, else
  the first attack's. Returns a tf.function (x, y) -> dict of per-example correctness and
  summed vulnerabilities.
  """
  feats_fn = _features_of(net)
  model_fn = lambda t: net(t, training=False)  # noqa: E731
  craft_fn = model_fn if source is None else (lambda t: source(t, training=False))

  @tf.function(reduce_retracing=True)
  def step(x, y):
    logits, feats = feats_fn(x)
    out = {"clean": predictions_correct(logits, y)}
    chosen = chosen_feats = robust = None
    per_attack = []
    for _, attack in named_attacks:
      x_adv = tf.stop_gradient(attack(craft_fn, x, y))
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
                 verbose=True, label=None):
  """Clean/adversarial accuracy and vulnerability of `net` over a dataset.

  `attack`: `attack(model_fn, x, y) -> x_adv`, or a dict {name: attack} for the per-example
  worst case. With `source`, examples are crafted on `source` and transferred (black box).
  Returns a dict of fractions in [0, 1]: clean_acc, adv_acc, vulnerability (mean |f(x) -
  f(x_adv)| over units and examples, averaged over layers), layer_vulnerability,
  unit_vulnerability (per unit of feature layer `feature_layer`), per_attack, examples.
  """
  named = list(attack.items()) if isinstance(attack, dict) else \
      [(getattr(attack, "__name__", "attack"), attack)]
  step = make_eval_step(net, named, source=source, feature_layer=feature_layer)
  return run_steps(step, dataset, n_examples, names=[n for n, _ in named], verbose=verbose,
                   label=label)


def is_stochastic(net, x, tol=1e-6):
  """True when two inference calls on the same batch give different logits."""
  a = np.asarray(net(x, training=False))
  b = np.asarray(net(x, training=False))
  return bool(np.max(np.abs(a - b)) > tol)


# ----------------------------------------------------------------------------------------------
# Sanity checks (Carlini et al. 2019).


def _accuracy_under(net, x, y, spec, batch=EVAL_BATCH):
  """Accuracy of `net` on (x, y) under one attack spec ('noise' = uniform noise in the ball)."""
  model_fn = lambda t: net(t, training=False)  # noqa: E731
  if spec.name == "noise":
    def attack(_, xb, yb):
      del yb
      noise = tf.random.uniform(tf.shape(xb), -spec.eps, spec.eps)
      return tf.clip_by_value(xb + noise, spec.clip_min, spec.clip_max)
  else:
    attack = make_attack(spec)

  @tf.function(reduce_retracing=True)
  def step(xb, yb):
    return predictions_correct(model_fn(tf.stop_gradient(attack(model_fn, xb, yb))), yb)

  right = [step(x[i:i + batch], y[i:i + batch]).numpy() for i in range(0, len(x), batch)]
  return float(np.concatenate(right).mean())


def input_gradients(net, x, y, batch=EVAL_BATCH):
  """Per example L1 norms of d loss / d x for the margin loss and for cross-entropy.

  The margin max_{j != y} z_j - z_y does not saturate (cross-entropy gradients of very
  confident examples can underflow to exactly 0 in float32), so it is the one checked.
  """
  @tf.function(reduce_retracing=True)
  def grads(xb, yb):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(xb)
      logits = net(xb, training=False)
      margin = tf.reduce_sum(cw_margin(logits, yb))
      ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(yb, tf.int32), logits=logits))
    norm = lambda g: tf.zeros([tf.shape(xb)[0]]) if g is None else tf.reduce_sum(  # noqa: E731
        tf.reshape(tf.abs(g), [tf.shape(xb)[0], -1]), axis=1)
    return norm(tape.gradient(margin, xb)), norm(tape.gradient(ce, xb))

  out = [grads(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
  return (np.concatenate([m.numpy() for m, _ in out]),
          np.concatenate([c.numpy() for _, c in out]))


def sanity_checks(net, x, y, spec, *, whitebox_acc=None, blackbox_acc=None,
                  eps_factors=(0.25, 0.5, 1.0, 2.0), step_fractions=(0.25, 0.5, 1.0),
                  large_eps=None, large_eps_max_acc=0.02, min_grad_fraction=0.9, tol=None,
                  verbose=True):
  """Carlini et al. (2019) checks of a PGD evaluation on (x, y) (float tensors).

  1. eps_monotone: PGD accuracy does not increase with eps (eps x `eps_factors`, the step
     size scaled alike).
  2. steps_monotone: nor with the number of steps (`spec.steps` x `step_fractions`).
  3. large_eps: an unbounded attack (eps = the whole input box, default clip_max -
     clip_min; step 2.5 eps / steps) brings accuracy to about 0 (<= `large_eps_max_acc`).
  4. iterative_beats_single_step: PGD is not weaker than FGSM.
  5. iterative_beats_noise: PGD is not weaker than uniform noise in the same ball.
  6. whitebox_beats_blackbox: the white-box attack is not weaker than the transferred
     black-box one (when both accuracies are given).
  7. nonzero_gradients: the input gradient is non-zero on at least `min_grad_fraction` of
     the examples.
  "Not weaker" allows `tol` (default max(0.015, 3 / n)) for the randomness of the attacks.
  Returns dict(examples, tolerance, checks {name: {values..., passed}}, passed, failed,
  possible_gradient_masking).
  """
  level = tf.get_logger().level
  tf.get_logger().setLevel("ERROR")  # one traced attack per setting: retracing is expected
  try:
    return _sanity_checks(net, x, y, spec, whitebox_acc, blackbox_acc, eps_factors,
                          step_fractions, large_eps, large_eps_max_acc, min_grad_fraction,
                          tol, verbose)
  finally:
    tf.get_logger().setLevel(level)


def _sanity_checks(net, x, y, spec, whitebox_acc, blackbox_acc, eps_factors, step_fractions,
                   large_eps, large_eps_max_acc, min_grad_fraction, tol, verbose):
  n = int(len(x))
  tol = max(0.015, 3.0 / n) if tol is None else tol
  pgd = spec.replace(name="pgd", restarts=1)
  checks = {}

  def log(msg):
    if verbose:
      print(f"  sanity: {msg}", flush=True)

  accs = [_accuracy_under(net, x, y, pgd.replace(eps=pgd.eps * f, step_size=pgd.step_size * f))
          for f in eps_factors]
  checks["eps_monotone"] = dict(
      eps=[pgd.eps * f for f in eps_factors], adv_acc=accs,
      passed=all(b <= a + tol for a, b in zip(accs, accs[1:])))
  log(f"PGD accuracy by eps {checks['eps_monotone']['eps']}: {accs}")

  steps = sorted({max(1, int(round(pgd.steps * f))) for f in step_fractions})
  accs = [_accuracy_under(net, x, y, pgd.replace(steps=s)) for s in steps]
  checks["steps_monotone"] = dict(steps=steps, adv_acc=accs,
                                  passed=all(b <= a + tol for a, b in zip(accs, accs[1:])))
  log(f"PGD accuracy by steps {steps}: {accs}")

  big = (pgd.clip_max - pgd.clip_min) if large_eps is None else large_eps
  big_steps = max(pgd.steps, 10)
  acc = _accuracy_under(net, x, y, pgd.replace(eps=big, step_size=2.5 * big / big_steps,
                                               steps=big_steps))
  checks["large_eps"] = dict(eps=big, steps=big_steps, adv_acc=acc,
                             max_acc=large_eps_max_acc, passed=acc <= large_eps_max_acc)
  log(f"PGD accuracy at eps={big}: {acc}")

  pgd_acc = _accuracy_under(net, x, y, pgd)
  fgsm_acc = _accuracy_under(net, x, y, pgd.replace(name="fgsm"))
  noise_acc = _accuracy_under(net, x, y, pgd.replace(name="noise"))
  checks["iterative_beats_single_step"] = dict(pgd_acc=pgd_acc, fgsm_acc=fgsm_acc,
                                               passed=pgd_acc <= fgsm_acc + tol)
  if pgd.steps * pgd.step_size < pgd.eps:
    checks["iterative_beats_single_step"]["note"] = (
        f"steps x step_size = {pgd.steps * pgd.step_size:g} < eps = {pgd.eps:g}: PGD cannot "
        "use its whole budget; raise --attack_steps or --step_size")
  checks["iterative_beats_noise"] = dict(pgd_acc=pgd_acc, noise_acc=noise_acc,
                                         passed=pgd_acc <= noise_acc + tol)
  log(f"accuracy under PGD {pgd_acc}, FGSM {fgsm_acc}, uniform noise {noise_acc}")

  if whitebox_acc is not None and blackbox_acc is not None:
    checks["whitebox_beats_blackbox"] = dict(whitebox_acc=whitebox_acc,
                                             blackbox_acc=blackbox_acc,
                                             passed=whitebox_acc <= blackbox_acc + tol)

  margin, ce = input_gradients(net, x, y)
  frac, frac_ce = float(np.mean(margin > 0)), float(np.mean(ce > 0))
  checks["nonzero_gradients"] = dict(fraction_nonzero=frac, fraction_nonzero_ce=frac_ce,
                                     min_fraction=min_grad_fraction,
                                     passed=frac >= min_grad_fraction)
  log(f"examples with a non-zero input gradient: {frac:.3f} (cross-entropy: {frac_ce:.3f})")

  failed = [k for k, v in checks.items() if not v["passed"]]
  return dict(examples=n, tolerance=tol, checks=checks, passed=not failed, failed=failed,
              possible_gradient_masking=bool(failed))


# ----------------------------------------------------------------------------------------------
# The paper's table.


def model_name(result):
  """'ANP-VS' etc.; the folder name of a model whose method is unknown (a SavedModel)."""
  method = result.get("method")
  if method in METHOD_NAMES:
    return METHOD_NAMES[method]
  if method:
    return str(method)
  return os.path.basename(os.path.normpath(result.get("model_dir") or "model"))


def _fmt(value, spec, scale=1.0):
  return "n/a" if value is None else format(scale * value, spec)


def table_cells(result, name=None):
  """The cells of the README table row of an eval.json dict."""
  bb = result.get("blackbox") or {}
  return [name or model_name(result),
          _fmt(result.get("clean_acc"), ".2f", 100),
          _fmt(result.get("adv_acc"), ".2f", 100),
          _fmt(bb.get("adv_acc"), ".2f", 100),
          _fmt(result.get("vulnerability"), ".3f"),
          _fmt(bb.get("vulnerability"), ".3f"),
          _fmt(result.get("memory_pct"), ".2f"),
          _fmt(result.get("flops_ratio"), ".2f"),
          _fmt(result.get("sparsity"), ".2f", 100)]


def markdown_table(rows):
  """A markdown table with the README's columns; `rows` are lists of cells."""
  lines = ["| " + " | ".join(TABLE_COLUMNS) + " |",
           "| " + " | ".join("---" for _ in TABLE_COLUMNS) + " |"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def table_row(result, name=None):
  return "| " + " | ".join(table_cells(result, name)) + " |"


def format_table(result):
  """The printed summary: accuracies and sparsity in percent, as the paper's tables."""
  att = result["attack"]
  label = "strongest of " + "/".join(att["attacks"]) if att["name"] == "strongest" else \
      f"{att['name'].upper()}-{att['steps']}"
  if att.get("restarts", 1) > 1:
    label += f" x{att['restarts']} restarts"
  bb = result.get("blackbox")
  rows = [("Clean acc. (%)", _fmt(result["clean_acc"], ".2f", 100)),
          (f"White box acc. (%), {label}", _fmt(result["adv_acc"], ".2f", 100))]
  if att["name"] == "strongest":
    rows += [(f"  {k} acc. (%)", _fmt(v, ".2f", 100)) for k, v in result["per_attack"].items()]
  rows += [("Black box acc. (%)", _fmt(bb and bb["adv_acc"], ".2f", 100)),
           ("White box vulnerability", _fmt(result["vulnerability"], ".3f")),
           ("Black box vulnerability", _fmt(bb and bb["vulnerability"], ".3f")),
           ("Memory (%)", _fmt(result.get("memory_pct"), ".2f")),
           ("Flops (x)", _fmt(result.get("flops_ratio"), ".2f")),
           ("Sparsity (%)", _fmt(result["sparsity"], ".2f", 100)),
           ("Units kept", f"{result['n_active']} of {result['n_units']}"
            if result.get("n_units") else "n/a")]
  sanity = result.get("sanity")
  if sanity:
    rows.append(("Sanity checks", "passed" if sanity["passed"] else
                 "FAILED: " + ", ".join(sanity["failed"]) + " (possible gradient masking)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def efficiency_columns(arch, n_active, unit_counts, n_classes):
  """{memory_pct, flops_ratio}: the paper's columns (`anp.efficiency`)."""
  cols = efficiency.paper_columns(arch, list(n_active), list(unit_counts), n_classes)
  return dict(memory_pct=float(cols["memory_pct"]), flops_ratio=float(cols["flops_ratio"]))


# ----------------------------------------------------------------------------------------------
# Models: runs, original checkpoints, SavedModels.


class SavedModelNet:
  """A SavedModel's `serving_default` (images -> probabilities) as a logits model.

  Logits are log-probabilities (cross-entropy, CW and DLR losses are unchanged by the
  per-example shift). It exposes no latent features: its vulnerability is n/a.
  """

  masks = ()
  unit_counts = ()

  def __init__(self, path):
    loaded = load_saved_model(path)
    self.loaded = loaded
    self.fn = loaded.signatures["serving_default"] if hasattr(loaded, "signatures") else loaded

  def __call__(self, x, training=False, return_features=False):
    del training
    probs = self.fn(images=x)
    probs = probs["probabilities"] if isinstance(probs, dict) else probs
    logits = tf.math.log(tf.maximum(tf.cast(probs, tf.float32), 1e-30))
    return (logits, []) if return_features else logits


def _is_saved_model(path):
  return bool(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def load_model(path, cfg, flag="--model_dir"):
  """(net, run_cfg, kind) of a run directory, an original checkpoint or a SavedModel.

  kind: 'run' | 'original_checkpoint' | 'saved_model'. `cfg` (the flags) gives the data set
  and preprocessing of models that do not record them.
  """
  from anp import original_ckpt

  if _is_saved_model(path):
    # The export may keep the run's config.json next to saved_model.pb.
    saved = run_config_path(path)
    run_cfg = Config.load(saved) if os.path.isfile(saved) else dataclasses.replace(cfg)
    return SavedModelNet(path), run_cfg.resolved(), "saved_model"
  if path and os.path.isfile(run_config_path(path)):
    net, run_cfg = load_run(path)
    return net, run_cfg, "run"
  if original_ckpt.is_original(path):
    net, run_cfg = original_ckpt.load_original_run(path, cfg)
    return net, run_cfg, "original_checkpoint"
  raise RunError(f"Flag {flag}: {path!r} is not a training run directory (with "
                 "config.json and a checkpoint), a checkpoint of the original code, or a "
                 "SavedModel directory.")


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
  net, run_cfg, kind = load_model(cfg.model_dir, cfg)
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
    source, src_cfg, _ = load_model(cfg.source_model_dir, cfg, "--source_model_dir")
    if (src_cfg.dataset, src_cfg.preprocess) != (cfg.dataset, cfg.preprocess):
      raise UserError(f"Flag --source_model_dir: {cfg.source_model_dir!r} is a "
                      f"{src_cfg.dataset}/{src_cfg.preprocess} model, the evaluated one "
                      f"{cfg.dataset}/{cfg.preprocess}; a transfer attack needs the same "
                      "data set and input space.")

  known = kind != "saved_model" or os.path.isfile(run_config_path(cfg.model_dir))
  result = dict(model_dir=cfg.model_dir, model_kind=kind, dataset=cfg.dataset,
                method=run_cfg.method if known else None, preprocess=cfg.preprocess,
                architecture=architecture(cfg.dataset), warnings=[])
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
                    verbose=verbose)
  first = next(iter(specs.values())).as_dict()
  result.update(
      clean_acc=wb["clean_acc"], adv_acc=wb["adv_acc"], vulnerability=wb["vulnerability"],
      layer_vulnerability=wb["layer_vulnerability"], per_attack=wb["per_attack"],
      unit_vulnerability=None if wb["unit_vulnerability"] is None else dict(
          layer=len(wb["layer_vulnerability"]) - 1, values=wb["unit_vulnerability"]),
      examples=wb["examples"], max_linf=wb["max_linf"],
      attack=dict(first, name=cfg.attack, attacks=list(specs)))

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
                      verbose=verbose, label="bb_acc")
    result["blackbox"] = dict(
        adv_acc=bb["adv_acc"], vulnerability=bb["vulnerability"],
        layer_vulnerability=bb["layer_vulnerability"], source_model_dir=cfg.source_model_dir,
        source_method=src_cfg.method, attack=bb_spec.as_dict())

  # Size: of the masked net, or of a --mode=prune export from its pruning.json.
  units = None
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
  out_dir = output_dir(cfg.model_dir)
  with open(os.path.join(out_dir, "eval.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(out_dir, "eval.md"), "w") as f:
    f.write(markdown_table([table_cells(result)]))
  print(format_table(result))
  print(markdown_table([table_cells(result)]), end="")
  return result
