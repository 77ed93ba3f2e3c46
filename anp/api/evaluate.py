"""`evaluate`: the paper's table of a Keras model; `export`: a SavedModel for TF Serving.

Both are the CLI's code: the attacks of `--mode=eval` (`anp.evaluation.attack_specs`, the same
names and budgets), its compiled per-batch evaluation (`anp.evaluation.eval_net.evaluate_net`:
per-example worst case over the attacks, the vulnerability of the first attack's examples) and
the SavedModel of `--mode=prune` (`anp.deploy.export.save_for_serving`).
"""

import numpy as np
import tensorflow as tf

from anp.api.compact import compact
from anp.deploy import efficiency
from anp.deploy.export import save_for_serving
from anp.evaluation.attack_specs import AttackSpec, attack_names, make_attack
from anp.evaluation.eval_net import evaluate_net
from anp.evaluation.tables import PAPER_PGD_STEPS
from models.base import MaskedNet


class _Logits:
  """Any Keras model or callable x -> logits, in the evaluation's calling convention."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, x, training=False, return_features=False):
    del training
    logits = self.fn(x, training=False) if hasattr(self.fn, "trainable_variables") \
        else self.fn(x)
    return (logits, []) if return_features else logits


def _pct(v):
  return None if v is None else 100.0 * v


def evaluate(model, dataset, attacks="pgd", *, eps=0.3, step_size=0.01, steps=PAPER_PGD_STEPS,
             restarts=1, eot_samples=1, queries=5000, clip=(0.0, 1.0), n_examples=None,
             compact_attack=True, flops=True, verbose=False):
  """The paper's columns for `model` on `dataset` (batches of images, integer labels).

  Args:
    model: a `MaskedModel` or one of the CLI's networks (units, sparsity and vulnerability
      reported), or any Keras model or callable x -> logits (accuracies only).
    attacks: an attack name of `--attack` (pgd, fgsm, apgd-ce, apgd-dlr, apgd-t, fab-t, cw,
      square, autoattack, autoattack-rand), a comma-separated list or a list of them, or
      'strongest' (pgd, apgd-ce, apgd-dlr, cw, square): an example counts as robust when no
      attack fools the model.
    eps, step_size, steps, restarts, eot_samples, queries: the attacks' budget (PGD-40 of
      step 0.01 in eps 0.3 by default, MNIST's evaluation).
    flops: also count the FLOPs of one image, masked and compact (TF profiler; a few seconds).

  Returns:
    A dict, accuracies and sparsity in percent: 'Clean Acc.', 'White box PGD-<steps> acc.'
    (when pgd ran), 'White box AutoAttack acc.' (when it ran), 'White box worst case acc.',
    'White Box Vulnerability' (mean |f(x) - f(x_adv)| of the first attack's examples over the
    site outputs), 'Sparsity' (units pruned), 'Memory' (compact parameters / parameters, %),
    'Flops' (x fewer in the compact model); and per_attack (percent), examples, n_active,
    n_units, params (dense, compact), flops (dense, compact).
    Memory and Flops are measured on the compact model, not the paper's LeNet / VGG formulas.
  """
  names = attack_names(attacks if isinstance(attacks, str) else ",".join(attacks))
  specs = {n: AttackSpec(n, eps=eps, step_size=step_size, steps=steps, restarts=restarts,
                         eot_samples=eot_samples, clip_min=clip[0], clip_max=clip[1],
                         queries=queries) for n in names}
  masked = isinstance(model, MaskedNet)
  net = model if masked else _Logits(model)
  result = evaluate_net(net, dataset, {n: make_attack(s) for n, s in specs.items()},
                        n_examples, verbose=verbose, compact=compact_attack)
  per = {n: _pct(v) for n, v in result["per_attack"].items()}
  table = {"Clean Acc.": _pct(result["clean_acc"])}
  if "pgd" in per:
    table[f"White box PGD-{steps} acc."] = per["pgd"]
  auto = [n for n in per if n.startswith("autoattack") and "/" not in n]
  if auto:
    table["White box AutoAttack acc."] = per[auto[0]]
  table["White box worst case acc."] = _pct(result["adv_acc"])
  table["White Box Vulnerability"] = result["vulnerability"]
  table.update(per_attack=per, examples=result["examples"], attacks=list(names))
  if masked:
    table.update(_efficiency(model, flops))
  return table


def _efficiency(masked, flops):
  small = compact(masked)
  shape = tuple(int(d) for d in small.inputs[0].shape[1:])
  dense = efficiency.count_params(masked.weights, exclude=masked.mask_variables)
  kept = efficiency.served_params(small)
  out = {"Sparsity": 100.0 * masked.sparsity() if masked.masks else 0.0,
         "Memory": 100.0 * kept / dense, "n_active": masked.n_active(),
         "n_units": list(masked.unit_counts), "params": (dense, kept)}
  if flops:
    f_dense = efficiency.forward_flops(lambda t: masked(t, training=False), shape)
    f_small = efficiency.forward_flops(lambda t: small(t, training=False), shape)
    out.update(Flops=f_dense / max(f_small, 1), flops=(f_dense, f_small))
  return out


def export(model, export_dir, standardize=False):
  """Writes `export_dir/<next version>/`, a SavedModel serving `images` -> probabilities,
  classes, logits (as `--mode=prune` writes); returns its path.

  `model`: a Keras model (a `MaskedModel` or CLI network is compacted first). `standardize` puts per-image
  standardisation inside, for a model trained on standardised images.
  """
  if isinstance(model, MaskedNet):
    model = compact(model)
  shape = tuple(int(d) for d in model.inputs[0].shape[1:])
  return save_for_serving(model, export_dir, shape, standardize)


def max_logit_difference(a, b, x):
  """max |a(x) - b(x)| of two models' inference logits on a batch x (a float)."""
  return float(np.max(np.abs(tf.convert_to_tensor(a(x, training=False))
                             - tf.convert_to_tensor(b(x, training=False)))))
